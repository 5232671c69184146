// The keystore's side of an update (services/updater): drain and the health check.
//  - drain {on}: while on, `reserve` is refused with PKS_UPDATE_DRAINING (testers get a 503 with
//    Retry-After); confirm and fail go on, so open reservations finish. Answers how many are
//    still open. In memory only: a reboot (the point of draining) or a restart ends it.
//  - update-health {seq?}: what the new slot must show before mark-good: the vault unsealed,
//    the audit chain verifying with the vault's audit key, and the audit entry `seq` (the head
//    the old slot left) still there with its hash: the same data.
import { createPublicKey } from 'node:crypto';
import { pksError } from '../../appliance/errors.js';
import type { IpcClient, VerbTable } from '../../appliance/ipc.js';
import { drainingDetail } from '../../appliance/contracts/update.js';
import { auditHead, verifyAudit } from './audit.js';
import type { Keystore } from './keystore.js';

export class Drain {
  on = false;
  retryAfterSeconds = 30;
  check(): void {
    if (this.on) throw pksError('PKS_UPDATE_DRAINING', drainingDetail(this.retryAfterSeconds));
  }
}

/** The table with `reserve` refused while draining; every other verb as it was. */
export function withDrain(verbs: VerbTable, drain: Drain): VerbTable {
  const reserve = verbs.reserve!;
  return {
    ...verbs,
    reserve: {
      ...reserve,
      handler: (req, ctx) => {
        drain.check();
        return reserve.handler(req, ctx);
      },
    },
  };
}

export function updateVerbs(ks: Keystore, vault: IpcClient, drain: Drain): VerbTable {
  const open = () => Object.values(ks.stats()).reduce((n, p) => n + p.reserved, 0);
  return {
    drain: {
      request: { type: 'object', additionalProperties: false, required: ['on'], properties: { on: { type: 'boolean' }, retryAfterSeconds: { type: 'integer', minimum: 1, maximum: 3600 } } },
      handler: (b: { on: boolean; retryAfterSeconds?: number }) => {
        drain.on = b.on;
        if (b.retryAfterSeconds) drain.retryAfterSeconds = b.retryAfterSeconds;
        return { draining: drain.on, open: open() };
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
