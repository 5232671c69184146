// pksctl update: signed A/B updates from the console or a USB stick (services/updater).
//   pksctl update install FILE [--json]   copies FILE into the updater's inbox, starts the update
//                                         and shows its progress (bar with ETA) until the box
//                                         reboots into the new slot, or the coded refusal
//   pksctl update status [--json]         booted slot and version, version floor, phase, last result
// The result of the switch itself (health check on the new slot, mark-good or fallback) is in
// `pksctl update status` after the reboot.
import { copyFileSync, chownSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';
import type { UpdateStatus } from '../contracts/update.js';

const inbox = (): string => process.env.PKS_UPDATER_INBOX ?? '/var/lib/pks/updater/inbox';

export function renderUpdateStatus(s: UpdateStatus): string {
  const lines = [
    `booted:  slot ${s.booted.slot}, version ${s.booted.version}`,
    `floor:   svn ${s.floor ?? 'unreadable'}`,
    `phase:   ${s.phase}${s.phase !== 'idle' ? ` (${s.progress}% ${s.message})` : ''}`,
  ];
  if (s.target) lines.push(`target:  ${s.target.version} (svn ${s.target.svn}) -> slot ${s.target.slot ?? '?'} from ${s.target.source}`);
  if (s.last) lines.push(`last:    ${s.last.ok ? 'OK' : 'FAILED'} ${s.last.version} at ${s.last.at} on slot ${s.last.slot}${s.last.code ? `: ${s.last.code}: ${s.last.detail ?? ''}` : ''}`);
  return lines.join('\n');
}

export async function updateCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, 'poll-ms': { type: 'string' } }, allowPositionals: true, strict: true });
  const [sub, file, ...extra] = positionals;
  const client = ipcClient(socketPath('updater', 'pksctl'), { timeoutMs: 120_000, connections: 1 });
  try {
    if (sub === 'status' && !file) {
      const s = await client.call<UpdateStatus>('status', {});
      out(values.json ? JSON.stringify(s) : renderUpdateStatus(s));
      return s.last && !s.last.ok && s.phase === 'idle' ? 1 : 0;
    }
    if (sub !== 'install' || !file || extra.length > 0) throw pksError('PKS_BAD_REQUEST', 'usage: pksctl update install FILE [--json] | pksctl update status [--json]');
    let size: number;
    try {
      size = statSync(file).size;
    } catch {
      throw pksError('PKS_NOT_FOUND', `${file} cannot be read`);
    }
    // the updater reads only its own inbox: copy the bundle there, owned by it
    const dir = inbox();
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const dest = path.join(dir, `${randomUUID()}.raucb`);
    copyFileSync(file, dest);
    try {
      const owner = statSync(dir);
      chownSync(dest, owner.uid, owner.gid);
    } catch {
      // not root (tests): the updater runs as the same user
    }
    const pollMs = Number(values['poll-ms'] ?? 250);
    const bar = values.json || !process.stderr.isTTY ? null : new cliProgress.SingleBar({ format: ' {phase} |{bar}| {percentage}% | ETA {eta_formatted} | {message}', stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
    let accepted: { version: string; slot: string };
    try {
      accepted = await client.call<{ version: string; slot: string }>('install', { file: dest }, 300_000);
    } catch (e) {
      rmSync(dest, { force: true });
      throw e;
    }
    rmSync(dest, { force: true });
    if (!values.json) out(`installing ${accepted.version} (${(size / 1048576).toFixed(1)} MiB) into slot ${accepted.slot}`);
    bar?.start(100, 0, { phase: 'draining', message: '' });
    let s: UpdateStatus;
    // the install phase is what takes time: the bar follows RAUC's percentages
    for (;;) {
      s = await client.call<UpdateStatus>('status', {});
      bar?.update(s.phase === 'installing' || s.phase === 'rebooting' ? s.progress : 0, { phase: s.phase, message: s.message.slice(0, 50) });
      if (values.json) out(JSON.stringify({ phase: s.phase, progress: s.progress, message: s.message }));
      if (s.phase === 'rebooting' || s.phase === 'idle') break;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    bar?.stop();
    if (s.phase === 'rebooting') {
      out(values.json ? JSON.stringify({ ok: true, version: accepted.version, slot: accepted.slot, next: 'reboot' }) : `installed ${accepted.version} into slot ${accepted.slot}; the box reboots into it, then checks its health (pksctl update status)`);
      return 0;
    }
    const last = s.last;
    out(values.json ? JSON.stringify({ ok: false, ...last }) : `update FAILED: ${last?.code ?? '?'}: ${last?.detail ?? ''} (slot ${s.booted.slot} stays)`);
    return 1;
  } finally {
    await client.close();
  }
}
