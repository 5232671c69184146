// pks-fleet updates / rollout: versions and update states fleet-wide, and a wave rollout of one
// bundle through the KMS (which signs each box's manifest). The bundle file is read only for its
// size and sha256; the boxes fetch it from --url (a server on the plant network).
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import type { IpcClient } from '../../appliance/ipc.js';
import { planWaves, rollout, stateFor } from './waves.js';

type Table = (rows: Array<Record<string, unknown>>, cols: string[]) => string;

export function updatesTable(boxes: Array<Record<string, unknown>>, table: Table): string {
  return table(
    boxes.map((b) => {
      const u = (b.update ?? {}) as Record<string, unknown>;
      const state = !b.update ? '-' : u.type === 'update-result' ? (u.ok ? `ok ${String(u.version ?? '')}` : `FAILED ${String(u.code ?? '')}`) : `${String(u.phase ?? '?')} ${u.percent !== undefined ? `${String(u.percent)}%` : ''}`;
      return { boxId: b.boxId, version: b.version, update: state.trim(), slot: u.slot ?? '-', at: u.receivedAt ?? '-' };
    }),
    ['boxId', 'version', 'update', 'slot', 'at'],
  );
}

export async function rolloutCommand(kms: IpcClient, opt: Record<string, string | true>, emit: (data: unknown, text: () => string) => void): Promise<number> {
  const need = (k: string): string => {
    const v = opt[k];
    if (typeof v !== 'string') throw pksError('PKS_BAD_REQUEST', `rollout needs --${k}`);
    return v;
  };
  const version = need('version');
  const svn = Number(need('svn'));
  const bundle = need('bundle');
  const base = need('url').replace(/\/+$/, '');
  const size = statSync(bundle).size;
  const h = createHash('sha256');
  for await (const c of createReadStream(bundle)) h.update(c as Buffer);
  const sha256 = h.digest('hex');
  const { boxes } = await kms.call<{ boxes: Array<Record<string, unknown>> }>('boxes');
  const wanted = typeof opt.boxes === 'string' && opt.boxes !== 'all' ? opt.boxes.split(',') : boxes.map((b) => String(b.boxId));
  const plan = planWaves(wanted, Number(opt.canary ?? 0.1), Number(opt.waves ?? 3));
  const announcedAt = new Map<string, number>();
  const lines: Array<Record<string, unknown>> = [];
  const report = await rollout(plan, {
    announce: async (boxId) => {
      announcedAt.set(boxId, Date.now());
      await kms.call('send-update', { boxId, version, svn, size, sha256, url: `${base}/${path.basename(bundle)}`, install: opt.install === 'window' ? 'window' : 'now' });
    },
    state: async (boxId) => {
      const b = await kms.call<Record<string, unknown>>('box', { boxId });
      return stateFor(b.update as Record<string, unknown> | null, version, announcedAt.get(boxId) ?? 0);
    },
    pollMs: Number(opt['poll-ms'] ?? 2000),
    timeoutMs: Number(opt['wave-timeout'] ?? 3600) * 1000,
    onEvent: (e) => lines.push(e),
  });
  emit({ plan: plan.waves, ...report }, () =>
    [
      `waves: ${plan.waves.map((w) => w.length).join(' + ')} boxes (canary first)`,
      `updated: ${report.done.join(' ') || '-'}`,
      report.failed ? `STOPPED at ${report.failed.boxId}: ${report.failed.detail}; not started: ${report.notStarted.join(' ') || '-'}` : 'rollout complete',
    ].join('\n'),
  );
  return report.ok ? 0 : 1;
}
