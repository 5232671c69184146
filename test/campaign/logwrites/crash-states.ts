// Power loss at every write (issue 17.2): a recording of the keystore's block writes (record.ts,
// in the VM) replayed on the host to every durable point and to sampled cuts in between
// (replay.ts), each crash state checked as the box would meet it at the next boot
// (check-state.ts): the file system, LMDB opens, no key issued twice, no confirmed injection
// lost, the audit verifies.
// Usage: node --import tsx test/campaign/logwrites/crash-states.ts --dir RECORDING [--every-write] [--states N] [--samples S] [--seed S] [--max N]
import { closeSync, createReadStream, existsSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createGunzip } from 'node:zlib';
import { readLog, MARK, type WriteLog } from './format.js';
import { planStates, Replayer, durablePoints, type CrashState, type StateKind } from './replay.js';
import { stateOk, type StateResult } from './check-state.js';
import { CheckWorker } from './check-worker.js';

/** A tester's answer, from a mark of the log (guest/line.mjs). */
export interface ToldEvent {
  /** the mark's entry */
  index: number;
  kind: 'issued' | 'confirmed';
  packageId: string;
  uid: string;
}

const EVENT = /^([ic]),([A-Za-z0-9._-]{1,128}),([0-9a-f]{2,64})$/;
const OWN_MARKS = new Set(['start', 'stopped', 'dm-log-writes-end']);

/** The testers' answers in the log's marks; any other mark text is an error (a recording to distrust). */
export function toldEvents(log: WriteLog): ToldEvent[] {
  const out: ToldEvent[] = [];
  for (const e of log.entries) {
    if (!(e.flags & MARK) || OWN_MARKS.has(e.mark!)) continue;
    for (const part of e.mark!.split(';')) {
      const m = EVENT.exec(part);
      if (!m) throw new Error(`entry ${e.index}: mark ${JSON.stringify(part.slice(0, 80))} is not an answer`);
      out.push({ index: e.index, kind: m[1] === 'i' ? 'issued' : 'confirmed', packageId: m[2]!, uid: m[3]! });
    }
  }
  return out;
}

export interface CrashStateReport {
  crash_states_checked: number;
  failed: number;
  entries: number;
  durable_points: number;
  by_kind: Record<StateKind, number>;
  issued: number;
  confirmed: number;
  /** states whose check killed the checker process (counted in failed too) */
  checker_crashes: number;
  /** states whose e2fsck replayed a journal */
  journal_replays: number;
  seconds: number;
  ms_per_state: number;
  problems: string[];
}

export interface CrashStateOptions {
  /** recording: initial.img(.gz), log.img(.gz), meta.json (auditSpki) */
  dir: string;
  /** aim for at least this many states: the sampling per interval is chosen to reach it */
  targetStates?: number;
  /** every prefix of every interval (power lost after each single write), samples are reordered subsets */
  everyWrite?: boolean;
  /** or a fixed number of cuts per interval */
  samplesPerInterval?: number;
  seed?: number;
  /** the answers to check against (default: the log's marks) */
  events?: ToldEvent[];
  /** stop after this many states (a short pass) */
  maxStates?: number;
  say?: (s: string) => void;
}

/** Decompresses to a sparse file: runs of zero 4 KiB blocks are skipped, not written. */
async function gunzipSparse(src: string, dest: string): Promise<void> {
  const fd = openSync(dest, 'w');
  let off = 0;
  let pending = Buffer.alloc(0);
  const BLK = 4096;
  const zero = Buffer.alloc(BLK);
  const flush = (b: Buffer): void => {
    for (let i = 0; i < b.length; i += BLK) {
      const blk = b.subarray(i, i + BLK);
      if (blk.length < BLK || !blk.equals(zero)) writeSync(fd, blk, 0, blk.length, off + i);
    }
    off += b.length;
  };
  try {
    for await (const chunk of createReadStream(src).pipe(createGunzip())) {
      const b = pending.length ? Buffer.concat([pending, chunk as Buffer]) : (chunk as Buffer);
      const whole = b.length - (b.length % BLK);
      flush(b.subarray(0, whole));
      pending = Buffer.from(b.subarray(whole));
    }
    flush(pending);
    // the device's full size, holes included
    ftruncateSync(fd, off);
  } finally {
    closeSync(fd);
  }
}

async function materialise(dir: string, name: string, tmp: string): Promise<string> {
  const plain = path.join(dir, name);
  if (existsSync(plain)) return plain;
  const gz = `${plain}.gz`;
  if (!existsSync(gz)) throw new Error(`recording ${dir}: neither ${name} nor ${name}.gz`);
  const out = path.join(tmp, name);
  await gunzipSparse(gz, out);
  return out;
}

/** How many cuts per interval reach `target` states (at least one). */
export function samplesFor(log: WriteLog, target: number): number {
  const points = durablePoints(log);
  const base = points.length + 1;
  let withWrites = 0;
  let prev = -1;
  for (const b of [...points, log.entries.length]) {
    for (let i = prev + 1; i < b; i++)
      if (!(log.entries[i]!.flags & MARK)) {
        withWrites++;
        break;
      }
    prev = b;
  }
  if (withWrites === 0) return 0;
  return Math.max(1, Math.ceil((target - base) / withWrites));
}

export async function checkCrashStates(o: CrashStateOptions): Promise<CrashStateReport> {
  const say = o.say ?? (() => {});
  const t0 = Date.now();
  // tmpfs when there is one: every state is a copy of the image
  const tmpRoot = existsSync('/dev/shm') && statSync('/dev/shm').isDirectory() ? '/dev/shm' : os.tmpdir();
  const tmp = mkdtempSync(path.join(tmpRoot, 'pks-crash-states-'));
  // the images live in RAM: gone with the run, also when it is stopped
  const onSignal = (sig: NodeJS.Signals): void => {
    rmSync(tmp, { recursive: true, force: true });
    process.kill(process.pid, sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const meta = JSON.parse(readFileSync(path.join(o.dir, 'meta.json'), 'utf8')) as { auditSpki: string };
    const initial = await materialise(o.dir, 'initial.img', tmp);
    const logFile = await materialise(o.dir, 'log.img', tmp);
    const log = readLog(logFile);
    const events = o.events ?? toldEvents(log);
    const plan = (samplesPerInterval: number): CrashState[] => planStates(log, { samplesPerInterval, seed: o.seed ?? 17, everyWrite: o.everyWrite ?? false });
    let samples = o.samplesPerInterval ?? (o.everyWrite ? 1 : samplesFor(log, o.targetStates ?? 10_000));
    let states: CrashState[] = plan(samples);
    // short intervals have few distinct cuts: ask for more until the target is met (or the log has no more)
    while (o.samplesPerInterval === undefined && states.length < (o.targetStates ?? 10_000) && samples < 256) {
      const more = plan(samples * 2);
      if (more.length === states.length) break;
      samples *= 2;
      states = more;
    }
    if (o.maxStates !== undefined && states.length > o.maxStates) {
      // a short pass: evenly spread over the log, the end included
      const step = states.length / o.maxStates;
      states = Array.from({ length: o.maxStates }, (_, i) => states[Math.min(states.length - 1, Math.floor((i + 1) * step) - 1)]!);
    }
    const points = durablePoints(log).length;
    say(`crash states: ${log.entries.length} log entries, ${points} durable points (FLUSH/FUA), ${o.everyWrite ? 'every write and ' : ''}${samples} ${o.everyWrite ? 'reordered subset(s)' : 'cut(s)'} per interval: ${states.length} states; ${events.filter((e) => e.kind === 'confirmed').length} confirmations and ${events.filter((e) => e.kind === 'issued').length} packages told in marks`);

    const replayer = new Replayer(log, logFile, initial, path.join(tmp, 'work.img'));
    const worker = new CheckWorker(meta.auditSpki);
    let issued = 0;
    let confirmed = 0;
    const byKind: Record<StateKind, number> = { durable: 0, prefix: 0, subset: 0, end: 0 };
    const problems: string[] = [];
    let ev = 0;
    let failed = 0;
    let replays = 0;
    let checked = 0;
    const scratch = path.join(tmp, 'state.img');
    const tCheck = Date.now();
    let lastSay = Date.now();
    try {
      for (const s of states) {
        // every answer marked before the interval's end must hold in any state of it (replay.ts)
        const now: ToldEvent[] = [];
        while (ev < events.length && events[ev]!.index < s.bound) now.push(events[ev++]!);
        worker.tell(now.map(({ kind, packageId, uid }) => ({ kind, packageId, uid })));
        issued += now.filter((e) => e.kind === 'issued').length;
        confirmed += now.filter((e) => e.kind === 'confirmed').length;
        replayer.materialise(s, scratch);
        const r: StateResult = await worker.check(scratch, path.join(tmp, 'w'));
        checked++;
        byKind[s.kind]++;
        if (r.journalReplayed) replays++;
        if (!stateOk(r)) {
          failed++;
          if (problems.length < 40) problems.push(`state ${checked} (${s.kind}, entries ..${s.base}${s.extra.length ? ` + ${s.extra.length} of ..${s.bound}` : ''}): ${r.problems.slice(0, 3).join('; ') || JSON.stringify(r)}`);
        }
        if (Date.now() - lastSay > 30_000) {
          lastSay = Date.now();
          say(`  ${checked}/${states.length} states checked, ${failed} failed (${((Date.now() - tCheck) / checked).toFixed(1)} ms per state)`);
        }
      }
    } finally {
      replayer.close();
      worker.close();
    }
    const seconds = (Date.now() - t0) / 1000;
    return {
      crash_states_checked: checked,
      failed,
      entries: log.entries.length,
      durable_points: points,
      by_kind: byKind,
      issued,
      confirmed,
      checker_crashes: worker.crashes,
      journal_replays: replays,
      seconds: Math.round(seconds),
      ms_per_state: checked ? Math.round(((Date.now() - tCheck) / checked) * 10) / 10 : 0,
      problems,
    };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { dir: { type: 'string' }, states: { type: 'string', default: '10000' }, samples: { type: 'string' }, seed: { type: 'string', default: '17' }, max: { type: 'string' }, 'every-write': { type: 'boolean', default: false } }, strict: true });
  if (!values.dir) throw new Error('usage: crash-states.ts --dir RECORDING [--states N] [--samples S] [--seed S] [--max N]');
  const r = await checkCrashStates({
    dir: values.dir,
    targetStates: Number(values.states),
    ...(values.samples ? { samplesPerInterval: Number(values.samples) } : {}),
    ...(values.max ? { maxStates: Number(values.max) } : {}),
    seed: Number(values.seed),
    everyWrite: values['every-write'],
    say: (s) => process.stderr.write(s + '\n'),
  });
  for (const p of r.problems.slice(0, 20)) process.stderr.write(`  PROBLEM ${p}\n`);
  process.stdout.write(JSON.stringify({ ...r, problems: r.problems.length }) + '\n');
  process.exit(r.failed === 0 && r.crash_states_checked > 0 ? 0 : 1);
}
