// pks-fleet: the central ops CLI. It talks to the reference KMS on its local socket (the KMS
// holds the fleet state: what every box published, what it verified) and relays commands
// signed HERE with the ops key: boxes check the ops signature, so the KMS cannot forge one,
// and the broker ACL needs no publish right for ops.
//
//   pks-fleet [--socket PATH] [--json] list
//   pks-fleet [--socket PATH] [--json] show BOX
//   pks-fleet [--socket PATH] [--json] attest          (issue 12: each box's attestation state, last failure)
//   pks-fleet [--socket PATH] [--json] pools
//   pks-fleet [--socket PATH] [--json] plant PLANT     (issue 16 §2: the boxes of one plant, stock summed)
//   pks-fleet [--socket PATH] cmd BOX release-stock '{"pool":P,"count":N,"to":BOX2}' --ops-key F   (rebalancing)
//   pks-fleet [--socket PATH] [--json] report [--oem OEM] [--ecu-type TYPE] [--box BOX]
//   pks-fleet [--socket PATH] [--json] tokens [--box BOX] [--user CN] [--ecu UID] [--ecu-type T] [--ev grant|deny|all] [--since ISO]
//   pks-fleet [--socket PATH] register BOX --identity B64 --transport B64 --audit B64 [--plant PLANT]
//   pks-fleet [--socket PATH] decommission BOX --reason TEXT   (issue 16 §3: revoke a box's certificates by hand)
//   pks-fleet [--socket PATH] import-oem FILE
//   pks-fleet [--socket PATH] cmd BOX COMMAND [ARGS-JSON] --ops-key PEMFILE [--ttl SECONDS] [--seq N]
//   pks-fleet [--socket PATH] [--json] updates
//   pks-fleet [--socket PATH] [--json] rollout --version V --svn N --bundle FILE --url BASE
//       [--boxes B1,B2|all] [--canary 0.1] [--waves 3] [--install now|window] [--wave-timeout S]
// --socket defaults to $PKS_KMS_SOCKET. The command seq defaults to the current time in ms,
// which only grows, so no counter has to be kept between invocations.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { asPksError, pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { ipcClient } from '../../appliance/ipc.js';
import { COMMANDS, signCommand, type CommandName } from '../../appliance/contracts/commands.js';
import { rolloutCommand, updatesTable } from './rollout.js';

interface Args {
  pos: string[];
  opt: Record<string, string | true>;
}

function parse(argv: string[]): Args {
  const pos: string[] = [];
  const opt: Record<string, string | true> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--json') opt.json = true;
    else if (a.startsWith('--')) {
      const v = argv[++i];
      if (v === undefined) throw pksError('PKS_BAD_REQUEST', `${a} needs a value`);
      opt[a.slice(2)] = v;
    } else pos.push(a);
  }
  return { pos, opt };
}

const str = (v: unknown): string => (v === null || v === undefined ? '-' : typeof v === 'object' ? JSON.stringify(v) : String(v));

function table(rows: Array<Record<string, unknown>>, cols: string[]): string {
  const cells = [cols, ...rows.map((r) => cols.map((c) => str(r[c])))];
  const w = cols.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
}

function stockText(stock: unknown): string {
  if (!stock || typeof stock !== 'object') return '-';
  return Object.entries(stock as Record<string, { available?: number; minimum?: number }>)
    .map(([p, s]) => `${p}=${s.available ?? '?'}/${s.minimum ?? '?'}`)
    .join(' ') || '-';
}

/** A box's attestation state (issue 12), with the reason of the last failure where `long`. */
function attestText(a: unknown, long = false): string {
  if (!a || typeof a !== 'object') return '-';
  const x = a as { state?: string; lastGoodAt?: string; lastFailure?: { code?: string; reason?: string; at?: string } };
  if (!long) return x.state ?? '-';
  const f = x.lastFailure ? `; last failure ${str(x.lastFailure.at)} ${str(x.lastFailure.code)} ${str(x.lastFailure.reason)}` : '';
  return `${str(x.state)} (last good quote ${str(x.lastGoodAt)}${f})`;
}

export async function main(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s + '\n')): Promise<number> {
  const { pos, opt } = parse(argv);
  const sock = (opt.socket as string | undefined) ?? process.env.PKS_KMS_SOCKET;
  if (!sock) throw pksError('PKS_BAD_REQUEST', 'no KMS socket: pass --socket or set PKS_KMS_SOCKET');
  const kms = ipcClient(path.resolve(sock), { timeoutMs: 60_000 });
  const json = opt.json === true;
  const emit = (data: unknown, text: () => string): void => out(json ? JSON.stringify(data, null, 2) : text());
  try {
    const [verb, ...rest] = pos;
    switch (verb) {
      case 'list': {
        const { boxes } = await kms.call<{ boxes: Array<Record<string, unknown>> }>('boxes');
        emit(boxes, () => table(boxes.map((b) => ({ ...b, stock: stockText(b.stock), alerts: (b.openAlerts as unknown[]).length + Number(b.kmsAlerts), attest: attestText(b.attest) })), ['boxId', 'health', 'version', 'mode', 'attest', 'stock', 'alerts', 'lastSeen']));
        return 0;
      }
      case 'show': {
        if (!rest[0]) throw pksError('PKS_BAD_REQUEST', 'show BOX');
        const b = await kms.call<Record<string, unknown>>('box', { boxId: rest[0] });
        emit(b, () =>
          [
            `box       ${str(b.boxId)} (${str(b.health)}, version ${str(b.version)}, mode ${str(b.mode)})`,
            `last seen ${str(b.lastSeen)}; last sync ${str(b.lastSync)}`,
            `stock     ${stockText(b.stock)}`,
            ...(b.attest ? [`attest    ${attestText(b.attest, true)}`] : []),
            `counters  ${str(b.counters)}`,
            `alerts    ${(b.alerts as unknown[]).length} at the KMS, ${(b.openAlerts as unknown[]).length} open on the box`,
            ...(b.alerts as Array<Record<string, unknown>>).slice(-10).map((a) => `  ${str(a.at)} ${str(a.code)} ${str(a.detail)}`),
            `commands`,
            ...(b.cmdResults as Array<Record<string, unknown>>).slice(-10).map((c) => `  seq ${str(c.seq)} ${str(c.command)} ${c.ok ? 'ok' : `refused ${str((c.error as { code?: string })?.code)}`}`),
          ].join('\n'),
        );
        return 0;
      }
      case 'attest': {
        const a = await kms.call<{ enabled: boolean; boxes: Array<Record<string, unknown>> }>('attestation');
        const rows = a.boxes.map((b) => ({ ...b, lastFailure: b.lastFailure ? `${str((b.lastFailure as { code?: string }).code)} ${str((b.lastFailure as { reason?: string }).reason)}` : '-' }));
        emit(a, () => (a.enabled ? table(rows, ['boxId', 'state', 'lastGoodAt', 'lastFailure']) : 'attestation is not enabled at this KMS'));
        return 0;
      }
      case 'plant': {
        if (!rest[0]) throw pksError('PKS_BAD_REQUEST', 'plant PLANT');
        const p = await kms.call<{ plant: string; boxes: Array<Record<string, unknown>>; stock: Record<string, { available: number; reserved: number; boxes: Record<string, number> }>; counters: Record<string, number> }>('plant', { plant: rest[0] });
        emit(p, () =>
          [
            `plant ${p.plant}: ${p.boxes.length} boxes; verified ${p.counters.verified}, burned ${p.counters.burned}, keys sent ${p.counters.keysSent}`,
            table(p.boxes.map((b) => ({ ...b, stock: stockText(b.stock), state: b.decommissioned ? 'decommissioned' : b.health })), ['boxId', 'state', 'version', 'stock', 'lastSeen']),
            ...Object.entries(p.stock).map(([pool, s]) => `${pool}: ${s.available} available in the plant (${Object.entries(s.boxes).map(([b, n]) => `${b} ${n}`).join(', ')}), ${s.reserved} reserved`),
          ].join('\n'),
        );
        return 0;
      }
      case 'pools': {
        const { pools } = await kms.call<{ pools: Array<Record<string, unknown>> }>('pools');
        emit(pools, () => table(pools, ['pool', 'stored', 'allocated', 'free', 'generate']));
        return 0;
      }
      case 'report': {
        const q: Record<string, unknown> = {};
        if (opt.oem) q.oem = opt.oem;
        if (opt['ecu-type']) q.ecuType = opt['ecu-type'];
        if (opt.box) q.boxId = opt.box;
        const { items } = await kms.call<{ items: Array<Record<string, unknown>> }>('report', q);
        emit(items, () => table(items, ['oem', 'ecuType', 'slot', 'recordId', 'boxId', 'state', 'uid', 'at']));
        return 0;
      }
      case 'tokens': {
        // unlock tokens across the fleet, as the boxes' audits reported them (scripts/kms/unlock.ts)
        const q: Record<string, unknown> = {};
        for (const [o, k] of [['box', 'boxId'], ['user', 'user'], ['ecu', 'ecu'], ['ecu-type', 'ecuType'], ['ev', 'ev'], ['since', 'since']] as const) if (typeof opt[o] === 'string') q[k] = opt[o];
        const { items } = await kms.call<{ items: Array<Record<string, unknown>> }>('unlock-tokens', q);
        emit(items, () => table(items, ['at', 'boxId', 'ev', 'cn', 'role', 'ecuType', 'uid', 'permissions', 'tokenId', 'reason']));
        return 0;
      }
      case 'register': {
        if (!rest[0]) throw pksError('PKS_BAD_REQUEST', 'register BOX --identity B64 --transport B64 --audit B64');
        emit(await kms.call('register', { boxId: rest[0], identity: opt.identity, transport: opt.transport, audit: opt.audit, ...(typeof opt.plant === 'string' ? { plant: opt.plant } : {}) }), () => `registered ${rest[0]}`);
        return 0;
      }
      case 'decommission': {
        // a box zeroized with --force (no KMS link), or lost: revoked and struck off by ops here
        if (!rest[0] || typeof opt.reason !== 'string') throw pksError('PKS_BAD_REQUEST', 'decommission BOX --reason TEXT');
        const r = await kms.call<{ revoked: string[] }>('decommission', { boxId: rest[0], reason: opt.reason });
        emit(r, () => `${rest[0]} decommissioned; revoked ${r.revoked.length} certificate(s)`);
        return 0;
      }
      case 'import-oem': {
        if (!rest[0]) throw pksError('PKS_BAD_REQUEST', 'import-oem FILE');
        const r = await kms.call<{ pools: Record<string, number> }>('import-oem', { path: path.resolve(rest[0]) });
        emit(r, () => Object.entries(r.pools).map(([p, n]) => `${p}: +${n} keys`).join('\n'));
        return 0;
      }
      case 'cmd': {
        const [boxId, command, argsJson] = rest;
        if (!boxId || !command || !(COMMANDS as readonly string[]).includes(command)) throw pksError('PKS_BAD_REQUEST', `cmd BOX (${COMMANDS.join('|')}) [ARGS-JSON] --ops-key FILE`);
        if (typeof opt['ops-key'] !== 'string') throw pksError('PKS_BAD_REQUEST', 'cmd needs --ops-key FILE');
        const args = (argsJson ? parseJsonOr('PKS_BAD_REQUEST', 'ARGS-JSON', argsJson) : {}) as Record<string, unknown>;
        const ttl = Number(opt.ttl ?? 3600);
        const seq = Number(opt.seq ?? Date.now());
        const signed = signCommand({ v: 1, seq, expiresAt: new Date(Date.now() + ttl * 1000).toISOString(), boxId, command: command as CommandName, args }, readFileSync(opt['ops-key'], 'utf8'));
        const r = await kms.call('send-command', { boxId, command: signed });
        emit({ ...(r as object), seq }, () => `sent ${command} to ${boxId} (seq ${seq}); its result appears in 'show ${boxId}'`);
        return 0;
      }
      case 'updates': {
        const { boxes } = await kms.call<{ boxes: Array<Record<string, unknown>> }>('boxes');
        emit(boxes.map((b) => ({ boxId: b.boxId, version: b.version, update: b.update })), () => updatesTable(boxes, table));
        return 0;
      }
      case 'rollout':
        return await rolloutCommand(kms, opt, emit);
      default:
        throw pksError('PKS_BAD_REQUEST', 'usage: pks-fleet [--socket PATH] [--json] list|show|attest|plant|pools|report|decommission|tokens|register|import-oem|cmd|updates|rollout ...');
    }
  } finally {
    await kms.close();
  }
}

// run as a command (directly, or through bin/pks-fleet.mjs), not when a test imports it
const entry = process.argv[1] ? path.resolve(process.argv[1]) : '';
if (entry === path.resolve(new URL(import.meta.url).pathname) || /pks-fleet(\.mjs)?$/.test(entry)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      const e = asPksError(err);
      process.stderr.write(`pks-fleet: ${e.code}: ${e.detail}\n`);
      process.exit(e.status >= 500 ? 2 : 1);
    },
  );
}
