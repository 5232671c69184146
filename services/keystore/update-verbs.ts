// The keystore's side of an update (services/updater): drain and the health check.
//  - drain {on, activeSeconds?}: while on, a `reserve` that would take a key from the stock is
//    refused with PKS_UPDATE_DRAINING (testers get a 503 with Retry-After); confirm and fail go
//    on, and so does a tester's retry for an ECU it holds an open reservation for (it gets that
//    package again: a tester that lost the answer finishes the very reservation the drain waits
//    for; refused, it could only wait out the drain's timeout), so open reservations finish.
//    Answers how many are still open: `open` those reserved within the last activeSeconds (a
//    tester still in its cycle), `stale` the older ones. A reservation whose tester died (its
//    tester API killed, the tester unplugged) is never confirmed; the updater does not wait out its drain timeout
//    for it: it stays RESERVED in the data and the sweep burns it at its TTL, as without an
//    update. In memory only: a reboot (the point of draining) or a restart ends it.
//  - update-health {seq?}: what the new slot must show before mark-good: the vault unsealed,
//    the audit chain verifying with the vault's audit key, and the audit entry `seq` (the head
//    the old slot left) still there with its hash: the same data.
import { createPublicKey } from 'node:crypto';
import type { IpcClient, VerbTable } from '../../appliance/ipc.js';
import { drainingDetail } from '../../appliance/contracts/update.js';
import { auditHead, verifyAudit } from './audit.js';
import type { Dbs } from './db.js';
import type { Keystore } from './keystore.js';
import { refuse, type Refusal } from './stock.js';
import { reserveVerb } from './verbs.js';

export class Drain {
  on = false;
  retryAfterSeconds = 30;
  /** the refusal while draining, null otherwise: asked inside the reservation's transaction */
  readonly newKey = (): Refusal | null => (this.on ? refuse('PKS_UPDATE_DRAINING', drainingDetail(this.retryAfterSeconds)) : null);
}

/** The table with `reserve` taking no key from the stock while draining; every other verb as it was. */
export function withDrain(verbs: VerbTable, drain: Drain, ks: Pick<Keystore, 'grant' | 'reserve'>): VerbTable {
  return { ...verbs, reserve: reserveVerb(ks, drain.newKey) };
}

/**
 * Open reservations by age on the keystore's monotonic clock (the pending index is keyed by it):
 * `open` reserved at or after `now - activeMs`, `stale` before. Without activeMs all are open.
 */
export function openReservations(dbs: Dbs, now: number, activeMs?: number): { open: number; stale: number } {
  const from = activeMs === undefined ? 0 : Math.max(0, now - activeMs);
  let open = 0;
  let stale = 0;
  for (const { key } of dbs.pending.getRange({})) {
    if (key[0] >= from) open++;
    else stale++;
  }
  return { open, stale };
}

export function updateVerbs(ks: Keystore, vault: IpcClient, drain: Drain): VerbTable {
  return {
    drain: {
      request: {
        type: 'object',
        additionalProperties: false,
        required: ['on'],
        properties: { on: { type: 'boolean' }, retryAfterSeconds: { type: 'integer', minimum: 1, maximum: 3600 }, activeSeconds: { type: 'integer', minimum: 1, maximum: 86_400 } },
      },
      handler: (b: { on: boolean; retryAfterSeconds?: number; activeSeconds?: number }) => {
        drain.on = b.on;
        if (b.retryAfterSeconds) drain.retryAfterSeconds = b.retryAfterSeconds;
        return { draining: drain.on, ...openReservations(ks.dbs, ks.mono.now(), b.activeSeconds === undefined ? undefined : b.activeSeconds * 1000) };
      },
    },
    'update-health': {
      request: { type: 'object', additionalProperties: false, properties: { seq: { type: 'integer', minimum: 0, maximum: Number.MAX_SAFE_INTEGER } } },
      handler: async (b: { seq?: number }) => {
        const problems: string[] = [];
        let vaultOk = false;
        let auditOk = false;
        try {
          vaultOk = (await vault.call<{ ready: boolean }>('status', {})).ready === true;
          const { spki } = await vault.call<{ spki: string }>('public-key', { name: 'audit' });
          const r = verifyAudit(ks.dbs, createPublicKey({ key: Buffer.from(spki, 'base64'), format: 'der', type: 'spki' }));
          auditOk = r.ok;
          problems.push(...r.problems.slice(0, 5));
        } catch (e) {
          problems.push(`vault: ${(e as { code?: string }).code ?? 'unreachable'}`);
        }
        const head = auditHead(ks.dbs);
        const at = b.seq ? ks.dbs.audit.get(b.seq) : undefined;
        return { vaultOk, auditOk, headSeq: head.seq, headHash: head.hash, hashAt: b.seq ? (at?.h ?? null) : head.hash, problems };
      },
    },
  };
}

export const UPDATE_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({ updater: ['drain', 'update-health', 'stats'] });
