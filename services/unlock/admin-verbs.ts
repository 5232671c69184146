// The unlock service's local verbs: pksctl (plant IT at the box) and the uplink (central ops'
// signed MQTT commands) manage users through the same Unlock operations as the console admins.
// The approver named in the audit is `pksctl:<who>` (the operator pksctl names with --as, or the
// login user) or `ops`; four eyes then means two different names, as on the console.
import type { VerbTable } from '../../appliance/ipc.js';
import { NAME } from '../../appliance/schema.js';
import type { Unlock } from './unlock.js';

const obj = (required: string[], properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required, properties });
const AS = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } as const;
const REQ_ID = { type: 'string', pattern: '^[a-z0-9]{8,40}$' } as const;
const REASON = { type: 'string', maxLength: 200, pattern: '^[\\x20-\\x7e]*$' } as const;
const ROLE = { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,31}$' } as const;
const ACCESS = { type: 'integer', minimum: 1, maximum: 5 * 365 * 86_400 } as const;
const QUERY = obj([], { user: NAME, ecu: { type: 'string', pattern: '^[0-9a-fA-F]{2,64}$' }, since: { type: 'string', format: 'date-time' }, limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 200 } });

export function unlockAdminVerbs(unlock: Unlock): VerbTable {
  const by = (caller: string, as?: string): string => (caller === 'uplink' ? 'ops' : `pksctl:${as ?? 'root'}`);
  return {
    onboard: {
      request: obj(['cn', 'role', 'accessSeconds'], { cn: NAME, role: ROLE, accessSeconds: ACCESS, as: AS }),
      handler: (b: { cn: string; role: string; accessSeconds: number; as?: string }, ctx) => unlock.onboard(by(ctx.caller, b.as), b),
    },
    approve: {
      request: obj(['id'], { id: REQ_ID, as: AS }),
      handler: (b: { id: string; as?: string }, ctx) => unlock.approve(by(ctx.caller, b.as), b.id),
    },
    reject: {
      request: obj(['id'], { id: REQ_ID, as: AS, reason: REASON }),
      handler: (b: { id: string; as?: string; reason?: string }, ctx) => unlock.reject(by(ctx.caller, b.as), b.id, b.reason),
    },
    revoke: {
      request: obj(['cn'], { cn: NAME, as: AS, reason: REASON }),
      handler: (b: { cn: string; as?: string; reason?: string }, ctx) => unlock.revoke(by(ctx.caller, b.as), b.cn, b.reason),
    },
    certificate: {
      request: obj(['cn'], { cn: NAME, as: AS, csr: { type: 'string', maxLength: 16 * 1024 }, passphrase: { type: 'string', minLength: 8, maxLength: 128 } }),
      maxBytes: 24 * 1024,
      handler: (b: { cn: string; as?: string; csr?: string; passphrase?: string }, ctx) =>
        b.csr !== undefined ? unlock.certifyCsr(by(ctx.caller, b.as), b.cn, b.csr) : unlock.certifyPkcs12(by(ctx.caller, b.as), b.cn, b.passphrase ?? ''),
    },
    users: { request: obj([], {}), handler: () => unlock.users() },
    requests: { request: obj([], { state: { enum: ['PENDING', 'APPROVED', 'REJECTED'] } }), handler: (b: { state?: string }) => unlock.requests(b.state) },
    log: { request: QUERY, handler: (q: { user?: string; ecu?: string; since?: string; limit: number }) => unlock.logQuery(q) },
    tokens: { request: QUERY, handler: (q: { user?: string; ecu?: string; since?: string; limit: number }) => unlock.tokens(q) },
    'public-keys': { request: obj([], {}), handler: () => unlock.publicKeys() },
    'user-ca': { request: obj([], {}), handler: async () => ({ certificate: await unlock.userCa() }) },
    roles: { request: obj([], {}), handler: () => ({ roles: unlock.cfg.roles, ecuTypes: unlock.cfg.ecuTypes }) },
    status: { request: obj([], {}), handler: () => ({ ...unlock.counters }) },
  };
}

export const UNLOCK_LOCAL_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  pksctl: ['onboard', 'approve', 'reject', 'revoke', 'certificate', 'users', 'requests', 'log', 'tokens', 'public-keys', 'user-ca', 'roles', 'status'],
  uplink: ['onboard', 'approve', 'revoke', 'tokens'],
  sentinel: ['status'],
});
