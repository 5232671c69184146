// `pksctl she`: offline calculator for the SHE memory update messages, for commissioning and
// for checking a tester's or an ECU's bytes by hand. It never talks to a service.
// Keys given on the command line are visible in the process list and shell history: use it
// with test keys or on a trusted workstation, never with production key material.

import { parseArgs } from 'node:util';
import { asPksError, isPksError, pksError } from '../errors.js';
import { parseHex, sheMessages, type SheUpdate } from '../she.js';

export const SHE_USAGE = [
  'usage: pksctl she --uid HEX30 --id N --auth-id N --auth-key HEX32 --key HEX32 --counter N --flags N [--json]',
  '  --uid       ECU UID, 15 bytes hex (all zero = wildcard, needs the WILDCARD flag)',
  '  --id        slot to write, 1..15 (MASTER_ECU_KEY=1, BOOT_MAC_KEY=2, BOOT_MAC=3, KEY_1..KEY_10=4..13)',
  '  --auth-id   slot of the authorising key, 1..15',
  '  --auth-key  current value of the authorising key, 16 bytes hex',
  '  --key       new key value, 16 bytes hex',
  '  --counter   28-bit counter, 0..268435455',
  '  --flags     5-bit F_ID: WRITE_PROT=0x10 BOOT_PROT=0x08 DEBUGGER_PROT=0x04 KEY_USAGE=0x02 WILDCARD=0x01',
  '  --json      print one line of JSON {"m1":..,"m5":..} instead of M1 = .. lines',
  'numbers are decimal or 0x-hex; keys on the command line are visible to other local users.',
].join('\n');

const OPTIONS = {
  uid: { type: 'string' },
  id: { type: 'string' },
  'auth-id': { type: 'string' },
  'auth-key': { type: 'string' },
  key: { type: 'string' },
  counter: { type: 'string' },
  flags: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

const REQUIRED = ['uid', 'id', 'auth-id', 'auth-key', 'key', 'counter', 'flags'] as const;

// Decimal without leading zeros (so "010" is not read as ten by some and eight by others) or
// 0x-hex; capped at 8 hex / 10 decimal digits, far above any SHE field, so Number() stays exact.
function parseNumber(s: string, field: string): number {
  if (/^(0|[1-9][0-9]{0,9})$/.test(s)) return Number(s);
  if (/^0[xX][0-9a-fA-F]{1,8}$/.test(s)) return Number.parseInt(s.slice(2), 16);
  throw pksError('PKS_BAD_REQUEST', `--${field}: "${s.slice(0, 20)}" is not a decimal or 0x-hex number`);
}

function parse(argv: string[]): { update: SheUpdate; json: boolean } | 'help' {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false, tokens: true });
  } catch (e) {
    // A stray positional is often a key whose option name was mistyped: do not echo it.
    const code = (e as { code?: string }).code;
    if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') throw pksError('PKS_BAD_REQUEST', 'unexpected positional argument');
    throw pksError('PKS_BAD_REQUEST', String((e as Error).message).split(/\.\s|\n/)[0]!.slice(0, 120));
  }
  if (parsed.values.help) return 'help';
  // parseArgs keeps the last of repeated options silently; with keys that hides typos.
  const seen = new Set<string>();
  for (const t of parsed.tokens ?? []) {
    if (t.kind !== 'option') continue;
    if (seen.has(t.name)) throw pksError('PKS_BAD_REQUEST', `--${t.name} given more than once`);
    seen.add(t.name);
  }
  const v = parsed.values;
  const missing = REQUIRED.filter((k) => v[k] === undefined);
  if (missing.length > 0) throw pksError('PKS_BAD_REQUEST', `missing ${missing.map((k) => `--${k}`).join(', ')}`);
  const update: SheUpdate = {
    uid: parseHex(v.uid, 15, '--uid'),
    keyId: parseNumber(v.id!, 'id'),
    authKeyId: parseNumber(v['auth-id']!, 'auth-id'),
    authKey: parseHex(v['auth-key'], 16, '--auth-key'),
    newKey: parseHex(v.key, 16, '--key'),
    counter: parseNumber(v.counter!, 'counter'),
    flags: parseNumber(v.flags!, 'flags'),
  };
  return { update, json: v.json === true };
}

/**
 * Runs `pksctl she <argv>`. Results go to `out`, diagnostics to `err` (stderr by default).
 * Exit codes: 0 done, 2 bad or missing arguments, 1 anything unforeseen.
 */
export async function sheCommand(
  argv: string[],
  out: (s: string) => void,
  err: (s: string) => void = (s) => process.stderr.write(`${s}\n`),
): Promise<number> {
  let update: SheUpdate | undefined;
  try {
    const p = parse(argv);
    if (p === 'help') {
      out(SHE_USAGE);
      return 0;
    }
    update = p.update;
    const m = sheMessages(update);
    const h = {
      m1: m.m1.toString('hex'),
      m2: m.m2.toString('hex'),
      m3: m.m3.toString('hex'),
      m4: m.m4.toString('hex'),
      m5: m.m5.toString('hex'),
    };
    if (p.json) out(JSON.stringify(h));
    else out([`M1 = ${h.m1}`, `M2 = ${h.m2}`, `M3 = ${h.m3}`, `M4 = ${h.m4}`, `M5 = ${h.m5}`].join('\n'));
    return 0;
  } catch (e) {
    const pe = asPksError(e);
    err(`pksctl she: ${pe.code}: ${pe.detail}`);
    if (isPksError(e) && pe.status < 500) {
      err(`run "pksctl she --help" for usage`);
      return 2;
    }
    return 1;
  } finally {
    update?.authKey.fill(0);
    update?.newKey.fill(0);
  }
}
