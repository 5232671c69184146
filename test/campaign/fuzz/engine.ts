// The fuzz engine of the campaign (issue 17.3). Each target takes bytes from outside (an MQTT
// payload, a request body, a config file, a token, a frame) and must answer with a value or a
// clean refusal (a coded PksError, or what the target names as its refusal), never another
// exception, and within a time bound. Inputs come from the committed seed corpus
// (test/campaign/corpus/<target>/), mutated byte-wise and, for JSON targets, structure-wise
// (a value in the tree replaced, removed, duplicated, nested), from a fast-check arbitrary where
// the target has one, and from splices. Feedback: an input that makes the target answer
// something it had not answered before (a new error code and detail prefix, or a new kind of
// success) joins the pool of inputs that are mutated further, so the run digs behind the first
// check of a parser rather than knocking at it. Deterministic for a given seed.
import fc from 'fast-check';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPksError } from '../../../appliance/errors.js';

export const CORPUS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'corpus');

export interface FuzzTarget {
  /** also the corpus folder's name */
  name: string;
  /** what the parser is, for the report */
  what: string;
  /** one input; returns an outcome label (for feedback) or throws a clean refusal */
  run(input: Buffer): string | void | Promise<string | void>;
  /** a clean refusal; default: a coded PksError */
  clean?(e: unknown): boolean;
  /** structure-aware mutation of JSON seeds */
  json?: boolean;
  /** structured inputs, mixed in with the mutations */
  arbitrary?: fc.Arbitrary<Uint8Array>;
  /** one input longer than this is a hang (default 2000 ms) */
  hangMs?: number;
  setup?(): Promise<void>;
  teardown?(): Promise<void>;
}

export interface Finding {
  kind: 'crash' | 'hang';
  input: string; // hex
  error: string;
}

export interface FuzzResult {
  target: string;
  inputs: number;
  crashes: number;
  hangs: number;
  seconds: number;
  outcomes: number;
  findings: Finding[];
}

/** xorshift32: fast, seeded, good enough to pick mutations */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

export function loadCorpus(name: string): Buffer[] {
  const dir = path.join(CORPUS_DIR, name);
  let files: string[] = [];
  try {
    files = readdirSync(dir).sort();
  } catch {
    return [];
  }
  return files.map((f) => readFileSync(path.join(dir, f)));
}

const INTERESTING = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x22, 0x5c, 0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x30, 0x39, 0x2d];
const JSON_VALUES: unknown[] = [null, true, false, 0, -1, 1, 2 ** 31, 2 ** 53, -(2 ** 53), 1e308, 0.5, '', 'a', '0', '00'.repeat(16), 'ff'.repeat(15), '__proto__', 'constructor', '\u0000', '\ud800', 'x'.repeat(300), [], {}, [[[[[]]]]], { __proto__: 1 }, '1970-01-01T00:00:00Z', '9999-12-31T23:59:59Z', 'NaN', '../../etc/passwd'];

/** byte-level mutations (the libFuzzer set, small): flip, set, insert, delete, duplicate, truncate */
export function mutateBytes(b: Buffer, r: () => number): Buffer {
  let out = Buffer.from(b);
  const n = 1 + (r() % 4);
  for (let i = 0; i < n; i++) {
    const pos = out.length ? r() % out.length : 0;
    switch (r() % 8) {
      case 0:
        if (out.length) out[pos] = out[pos]! ^ (1 << (r() % 8));
        break;
      case 1:
        if (out.length) out[pos] = INTERESTING[r() % INTERESTING.length]!;
        break;
      case 2:
        if (out.length) out[pos] = r() & 0xff;
        break;
      case 3: {
        const ins = Buffer.alloc(1 + (r() % 8));
        for (let j = 0; j < ins.length; j++) ins[j] = r() & 0xff;
        out = Buffer.concat([out.subarray(0, pos), ins, out.subarray(pos)]);
        break;
      }
      case 4: {
        const len = 1 + (r() % Math.max(1, Math.min(32, out.length - pos)));
        out = Buffer.concat([out.subarray(0, pos), out.subarray(pos + len)]);
        break;
      }
      case 5: {
        const len = 1 + (r() % Math.max(1, Math.min(64, out.length - pos)));
        out = Buffer.concat([out.subarray(0, pos + len), out.subarray(pos, pos + len), out.subarray(pos + len)]);
        break;
      }
      case 6:
        out = out.subarray(0, pos);
        break;
      default:
        // a run of digits or hex where a number or an id stood
        if (out.length) out[pos] = 0x30 + (r() % 10);
    }
  }
  return out.length > 1 << 20 ? out.subarray(0, 1 << 20) : out;
}

function randomValue(r: () => number, depth = 0): unknown {
  switch (r() % (depth > 3 ? 4 : 7)) {
    case 0:
      return JSON_VALUES[r() % JSON_VALUES.length];
    case 1:
      return (r() % 2 ? -1 : 1) * (r() % 100_000);
    case 2:
      return Buffer.from(Array.from({ length: r() % 24 }, () => 0x20 + (r() % 95))).toString('latin1');
    case 3:
      return 'ab'.repeat(r() % 40);
    case 4:
      return Array.from({ length: r() % 4 }, () => randomValue(r, depth + 1));
    case 5:
      return Object.fromEntries(Array.from({ length: r() % 4 }, (_, i) => [`k${i}`, randomValue(r, depth + 1)]));
    default:
      return 'x'.repeat(1 + (r() % 5000));
  }
}

/** structure-aware: parse, change one place in the tree, serialise; also a string holding JSON (an envelope's payload) */
export function mutateJson(b: Buffer, r: () => number): Buffer | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(b.toString('utf8'));
  } catch {
    return undefined;
  }
  const places: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = [];
  const walk = (v: unknown): void => {
    if (places.length > 4000 || !v || typeof v !== 'object') return;
    for (const [k, c] of Object.entries(v)) {
      places.push({ parent: v as Record<string, unknown>, key: Array.isArray(v) ? Number(k) : k });
      walk(c);
    }
  };
  walk(doc);
  if (!places.length) return Buffer.from(JSON.stringify(randomValue(r)));
  const n = 1 + (r() % 3);
  for (let i = 0; i < n; i++) {
    const { parent, key } = places[r() % places.length]!;
    const cur = (parent as Record<string | number, unknown>)[key];
    switch (r() % 7) {
      case 0:
        if (Array.isArray(parent)) parent.splice(key as number, 1);
        else delete parent[key as string];
        break;
      case 1:
        (parent as Record<string, unknown>)[`extra${r() % 3}`] = randomValue(r);
        break;
      case 2:
      case 3:
        if (typeof cur === 'string' && cur.trimStart().startsWith('{') && r() % 2) {
          // a nested JSON text (a signed envelope's payload): mutate inside it
          const inner = mutateJson(Buffer.from(cur), r);
          if (inner) (parent as Record<string | number, unknown>)[key] = inner.toString('utf8');
        } else if (typeof cur === 'number') (parent as Record<string | number, unknown>)[key] = [cur + 1, cur - 1, -cur, cur * 1000, 0, 2 ** 32][r() % 6];
        else if (typeof cur === 'string') (parent as Record<string | number, unknown>)[key] = [cur + cur, cur.slice(1), cur.toUpperCase(), `${cur}\u0000`, cur.replace(/[0-9a-f]/, 'g'), ''][r() % 6];
        else (parent as Record<string | number, unknown>)[key] = randomValue(r);
        break;
      case 4:
        if (Array.isArray(cur) && cur.length) cur.push(...cur.slice(0, 1 + (r() % cur.length)));
        else (parent as Record<string | number, unknown>)[key] = [cur];
        break;
      default:
        (parent as Record<string | number, unknown>)[key] = randomValue(r);
    }
  }
  return Buffer.from(JSON.stringify(doc));
}

const describeError = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}`.slice(0, 300) : String(e).slice(0, 300));

/** outcome label of a clean refusal: the code and the start of the detail (digits folded) */
function outcomeOf(e: unknown): string {
  // node's JSON messages quote the input itself
  if (e instanceof SyntaxError) return 'syntax';
  const x = e as { code?: string; detail?: string; message?: string };
  // names and values a mutation made up (quoted keys, numbers, hex) folded away: what is left says which check refused
  return `${x.code ?? 'E'}:${String(x.detail ?? x.message ?? '').replace(/'[^']*'|"[^"]*"|[0-9a-f]{6,}|\d+/g, '#').slice(0, 40)}`;
}

export interface FuzzOptions {
  /** stop after this many inputs ... */
  inputs?: number;
  /** ... or this many seconds, whichever comes first */
  seconds?: number;
  seed?: number;
  /** called every ~second with the count so far (the worker's heartbeat) */
  beat?: (inputs: number, current: Buffer) => void;
}

export async function fuzzTarget(t: FuzzTarget, o: FuzzOptions): Promise<FuzzResult> {
  const r = rng(o.seed ?? 1);
  const seeds = loadCorpus(t.name);
  const pool: Buffer[] = seeds.length ? [...seeds] : [Buffer.alloc(0)];
  const outcomes = new Set<string>();
  const clean = t.clean ?? isPksError;
  const hangMs = t.hangMs ?? 2000;
  const findings: Finding[] = [];
  let crashes = 0;
  let hangs = 0;
  const maxInputs = o.inputs ?? Number.MAX_SAFE_INTEGER;
  // fast-check gives structured inputs in batches (sampling one at a time costs more)
  let structured: Uint8Array[] = [];
  let fcSeed = o.seed ?? 1;
  const nextInput = (i: number): Buffer => {
    // the seeds themselves first, as they are
    if (i < seeds.length) return seeds[i]!;
    const pick = r() % 100;
    if (t.arbitrary && pick < 20) {
      if (!structured.length) structured = fc.sample(t.arbitrary, { numRuns: 500, seed: fcSeed++ });
      return Buffer.from(structured.pop()!);
    }
    const base = pool[r() % pool.length]!;
    if (t.json && pick < 65) {
      const m = mutateJson(base, r);
      if (m) return m;
    }
    if (pick > 94 && pool.length > 1) {
      const other = pool[r() % pool.length]!;
      return Buffer.concat([base.subarray(0, r() % (base.length + 1)), other.subarray(r() % (other.length + 1))]);
    }
    return mutateBytes(base, r);
  };
  await t.setup?.();
  const t0 = Date.now();
  const end = o.seconds ? t0 + o.seconds * 1000 : Number.MAX_SAFE_INTEGER;
  let lastBeat = t0;
  let i = 0;
  try {
    for (; i < maxInputs; i++) {
      if ((i & 63) === 0) {
        const now = Date.now();
        if (now > end) break;
        if (now - lastBeat > 1000) {
          lastBeat = now;
          // lets timers and I/O of async targets run, and the worker report
          await new Promise((res) => setImmediate(res));
        }
      }
      const input = nextInput(i);
      if ((i & 1023) === 0) o.beat?.(i, input);
      const s = performance.now();
      let outcome: string;
      try {
        const v = t.run(input);
        outcome = `ok:${(v instanceof Promise ? await v : v) ?? ''}`;
      } catch (e) {
        if (!clean(e)) {
          crashes++;
          if (findings.length < 20) findings.push({ kind: 'crash', input: input.toString('hex').slice(0, 4096), error: describeError(e) });
          continue;
        }
        outcome = outcomeOf(e);
      }
      const ms = performance.now() - s;
      if (ms > hangMs) {
        hangs++;
        if (findings.length < 20) findings.push({ kind: 'hang', input: input.toString('hex').slice(0, 4096), error: `took ${ms.toFixed(0)} ms` });
      }
      if (!outcomes.has(outcome)) {
        outcomes.add(outcome);
        if (pool.length < 2000) pool.push(input);
      }
    }
  } finally {
    await t.teardown?.();
  }
  return { target: t.name, inputs: i, crashes, hangs, seconds: Number(((Date.now() - t0) / 1000).toFixed(1)), outcomes: outcomes.size, findings };
}
