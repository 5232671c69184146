// The unlock service's records in the keystore: users and their onboarding requests, the
// certificates issued to them, every token granted and every request denied. Each change is one
// LMDB transaction together with its hash-chained audit entry and its outbox item for the KMS,
// and is on disk before the unlock service hears back; a token or certificate is signed by the
// vault only after its record is. Refusals are returned, not thrown (stock.ts's rule), and a
// refusal writes nothing but, where asked, a denial entry.
import type { Database } from 'lmdb';
import { pksError, type ErrorCode } from '../../appliance/errors.js';
import type { VerbTable } from '../../appliance/ipc.js';
import { NAME, hex } from '../../appliance/schema.js';
import { appendAudit } from './audit.js';
import type { Dbs } from './db.js';
import type { Keystore } from './keystore.js';
import type { UnlockLogEntry, UnlockRequest, UnlockTokenRecord, UnlockUser } from '../../appliance/contracts/unlock.js';
import { isRefusal, putOutbox, refuse, type Refusal } from './stock.js';

interface UnlockDbs {
  users: Database<UnlockUser, string>;
  requests: Database<UnlockRequest, string>;
  tokens: Database<UnlockTokenRecord, string>;
  /** audit seq → the entry, for queries by user, ECU and time without walking the whole audit */
  log: Database<UnlockLogEntry, number>;
}

const opened = new WeakMap<Dbs, UnlockDbs>();
export function unlockDbs(dbs: Dbs): UnlockDbs {
  let u = opened.get(dbs);
  if (!u) {
    const db = <V, K extends import('lmdb').Key>(name: string) => dbs.root.openDB<V, K>({ name });
    u = { users: db('unlock-users'), requests: db('unlock-requests'), tokens: db('unlock-tokens'), log: db('unlock-log') };
    opened.set(dbs, u);
  }
  return u;
}

/** Audit + index + outbox for one unlock event, inside the caller's transaction. */
function record(dbs: Dbs, now: number, ev: string, fields: Record<string, unknown> & { cn: string }): number {
  const seq = appendAudit(dbs, now, { ev: `unlock-${ev}`, ...fields });
  const at = new Date(now).toISOString();
  unlockDbs(dbs).log.putSync(seq, { seq, at, ev, ...fields });
  putOutbox(dbs, now, 'unlock', { ev, ...fields, auditSeq: seq });
  return seq;
}

/** Why a user may not act now, or null: revoked, expired, or this certificate is not theirs. */
export function userRefusal(u: UnlockUser | undefined, now: number, serial?: string): Refusal | null {
  if (!u) return refuse('PKS_UNLOCK_USER_UNKNOWN', 'not an onboarded user');
  if (u.state === 'REVOKED') return refuse('PKS_UNLOCK_REVOKED', 'access is revoked');
  if (!(Date.parse(u.expiresAt) > now)) return refuse('PKS_UNLOCK_EXPIRED', `access ended ${u.expiresAt}`);
  if (serial !== undefined) {
    const c = u.certs.find((x) => x.serial === serial.toLowerCase());
    if (!c) return refuse('PKS_UNLOCK_REVOKED', 'certificate is not (or no longer) this user\'s');
    if (c.revoked) return refuse('PKS_UNLOCK_REVOKED', 'certificate is revoked');
    if (!(Date.parse(c.notAfter) > now)) return refuse('PKS_UNLOCK_EXPIRED', 'certificate has expired');
  }
  return null;
}

const obj = (required: string[], properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required, properties });
const ROLE = { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,31}$' } as const;
const WHO = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,79}$' } as const;
const REQ_ID = { type: 'string', pattern: '^[a-z0-9]{8,40}$' } as const;
const SERIAL = hex(16);
const TIME = { type: 'string', format: 'date-time', maxLength: 40 } as const;
const DETAIL = { type: 'string', maxLength: 200, pattern: '^[\\x20-\\x7e]*$' } as const;
const HEXR = (min: number, max: number) => ({ type: 'string', pattern: `^([0-9a-f]{2}){${min},${max}}$` }) as const;
const ECU_TYPE = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$' } as const;
const QUERY = obj([], { user: NAME, ecu: HEXR(1, 32), since: TIME, limit: { type: 'integer', minimum: 1, maximum: 10_000, default: 200 } });

export const UNLOCK_KEYSTORE_VERBS = [
  'unlock-request-put',
  'unlock-approve',
  'unlock-reject',
  'unlock-revoke',
  'unlock-user-get',
  'unlock-users',
  'unlock-requests',
  'unlock-cert-record',
  'unlock-grant',
  'unlock-deny',
  'unlock-log',
  'unlock-tokens',
] as const;

/** The keystore verbs of the unlock service (spread into keystoreVerbs). */
export function unlockKeystoreVerbs(ks: Keystore): VerbTable {
  const dbs = ks.dbs;
  const u = unlockDbs(dbs);
  const commit = async <T>(fn: (now: number) => T | Refusal): Promise<T> => {
    const r = await ks.commit(() => fn(Date.now()));
    if (isRefusal(r)) throw pksError(r.refused, r.detail);
    return r;
  };
  /** a refusal that is also worth a denial entry in the audit (who tried what, and why not) */
  const deny = (now: number, r: Refusal, fields: Record<string, unknown> & { cn: string }): Refusal => {
    record(dbs, now, 'deny', { ...fields, reason: r.refused, detail: r.detail });
    return r;
  };
  const matches = (q: { user?: string; ecu?: string; since?: string }, e: { cn: string; uid?: unknown; at: string }): boolean =>
    (!q.user || e.cn === q.user) && (!q.ecu || e.uid === q.ecu.toLowerCase()) && (!q.since || e.at >= new Date(q.since).toISOString());

  return {
    'unlock-request-put': {
      request: obj(['id', 'cn', 'role', 'accessSeconds', 'requestedBy', 'approvalsNeeded'], {
        id: REQ_ID,
        cn: NAME,
        role: ROLE,
        accessSeconds: { type: 'integer', minimum: 1, maximum: 5 * 365 * 86_400 },
        requestedBy: WHO,
        approvalsNeeded: { type: 'integer', minimum: 1, maximum: 2 },
      }),
      handler: (b: Omit<UnlockRequest, 'at' | 'approvals' | 'state'>) =>
        commit((now) => {
          if (u.requests.doesExist(b.id)) return refuse('PKS_CONFLICT', `request ${b.id} exists`);
          const req: UnlockRequest = { ...b, at: new Date(now).toISOString(), approvals: [], state: 'PENDING' };
          u.requests.putSync(b.id, req);
          record(dbs, now, 'request', { cn: b.cn, role: b.role, requestId: b.id, accessSeconds: b.accessSeconds, by: b.requestedBy, approvalsNeeded: b.approvalsNeeded });
          return req;
        }),
    },
    'unlock-approve': {
      request: obj(['id', 'admin'], { id: REQ_ID, admin: WHO }),
      handler: (b: { id: string; admin: string }) =>
        commit((now) => {
          const req = u.requests.get(b.id);
          if (!req) return refuse('PKS_NOT_FOUND', `no request ${b.id}`);
          const refused = (detail: string) => deny(now, refuse('PKS_UNLOCK_APPROVAL', detail), { cn: req.cn, role: req.role, requestId: b.id, by: b.admin, action: 'approve' });
          if (req.state !== 'PENDING') return refused(`request is ${req.state}`);
          if (req.approvals.includes(b.admin)) return refused('this admin approved already: four eyes need a second one');
          if (req.requestedBy === b.admin && req.approvalsNeeded > 1) return refused('the requester cannot be one of the four eyes');
          const approvals = [...req.approvals, b.admin];
          const done = approvals.length >= req.approvalsNeeded;
          const next: UnlockRequest = { ...req, approvals, ...(done ? { state: 'APPROVED' as const, decidedAt: new Date(now).toISOString() } : {}) };
          u.requests.putSync(b.id, next);
          record(dbs, now, 'approve', { cn: req.cn, role: req.role, requestId: b.id, by: b.admin, approvals: approvals.length, of: req.approvalsNeeded });
          let user: UnlockUser | undefined;
          if (done) {
            const old = u.users.get(req.cn);
            user = {
              cn: req.cn,
              role: req.role,
              state: 'ACTIVE',
              expiresAt: new Date(now + req.accessSeconds * 1000).toISOString(),
              onboardedAt: new Date(now).toISOString(),
              approvedBy: approvals,
              // a re-onboarding (new role, longer access) keeps the user's live certificates
              certs: old && old.state === 'ACTIVE' ? old.certs : [],
            };
            u.users.putSync(req.cn, user);
            record(dbs, now, 'activate', { cn: req.cn, role: req.role, requestId: b.id, expiresAt: user.expiresAt, approvedBy: approvals });
          }
          return { request: next, ...(user ? { user } : {}) };
        }),
    },
    'unlock-reject': {
      request: obj(['id', 'admin'], { id: REQ_ID, admin: WHO, reason: DETAIL }),
      handler: (b: { id: string; admin: string; reason?: string }) =>
        commit((now) => {
          const req = u.requests.get(b.id);
          if (!req) return refuse('PKS_NOT_FOUND', `no request ${b.id}`);
          if (req.state !== 'PENDING') return refuse('PKS_UNLOCK_APPROVAL', `request is ${req.state}`);
          const next: UnlockRequest = { ...req, state: 'REJECTED', decidedAt: new Date(now).toISOString(), ...(b.reason ? { reason: b.reason } : {}) };
          u.requests.putSync(b.id, next);
          record(dbs, now, 'reject', { cn: req.cn, role: req.role, requestId: b.id, by: b.admin, detail: b.reason ?? '' });
          return next;
        }),
    },
    'unlock-revoke': {
      request: obj(['cn', 'by'], { cn: NAME, by: WHO, reason: DETAIL }),
      handler: (b: { cn: string; by: string; reason?: string }) =>
        commit((now) => {
          const user = u.users.get(b.cn);
          if (!user) return refuse('PKS_UNLOCK_USER_UNKNOWN', b.cn);
          const at = new Date(now).toISOString();
          const next: UnlockUser = { ...user, state: 'REVOKED', revokedAt: at, revokedBy: b.by, certs: user.certs.map((c) => ({ ...c, revoked: true })) };
          u.users.putSync(b.cn, next);
          record(dbs, now, 'revoke', { cn: b.cn, role: user.role, by: b.by, serials: user.certs.map((c) => c.serial), detail: b.reason ?? '' });
          return next;
        }),
    },
    'unlock-user-get': {
      request: obj(['cn'], { cn: NAME }),
      handler: (b: { cn: string }) => {
        const user = u.users.get(b.cn);
        if (!user) throw pksError('PKS_UNLOCK_USER_UNKNOWN', b.cn);
        return user;
      },
    },
    'unlock-users': {
      request: obj([], {}),
      handler: () => ({ items: [...u.users.getRange({ limit: 10_000 })].map((e) => e.value) }),
    },
    'unlock-requests': {
      request: obj([], { state: { enum: ['PENDING', 'APPROVED', 'REJECTED'] } }),
      handler: (b: { state?: string }) => ({ items: [...u.requests.getRange({ limit: 10_000 })].map((e) => e.value).filter((r) => !b.state || r.state === b.state) }),
    },
    'unlock-cert-record': {
      request: obj(['cn', 'serial', 'notAfter', 'by'], { cn: NAME, serial: SERIAL, notAfter: TIME, by: WHO }),
      handler: (b: { cn: string; serial: string; notAfter: string; by: string }) =>
        commit((now) => {
          const user = u.users.get(b.cn);
          const why = userRefusal(user, now);
          if (why) return deny(now, why, { cn: b.cn, action: 'certificate', by: b.by });
          const serial = b.serial.toLowerCase();
          if (user!.certs.some((c) => c.serial === serial)) return refuse('PKS_CONFLICT', 'serial issued before');
          // a certificate never outlives the access it stands for
          const notAfter = new Date(Math.min(Date.parse(b.notAfter), Date.parse(user!.expiresAt))).toISOString();
          const next: UnlockUser = { ...user!, certs: [...user!.certs.slice(-7), { serial, notAfter, revoked: false }] };
          u.users.putSync(b.cn, next);
          record(dbs, now, 'certificate', { cn: b.cn, role: user!.role, serial, notAfter, by: b.by });
          return { serial, notAfter };
        }),
    },
    'unlock-grant': {
      request: obj(['tokenId', 'cn', 'serial', 'role', 'ecuType', 'uid', 'challenge', 'permissions', 'notBefore', 'notAfter', 'tokenKey'], {
        tokenId: hex(16),
        cn: NAME,
        serial: SERIAL,
        role: ROLE,
        ecuType: ECU_TYPE,
        uid: HEXR(1, 32),
        challenge: HEXR(16, 32),
        permissions: hex(16),
        notBefore: TIME,
        notAfter: TIME,
        tokenKey: { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,15}$' },
      }),
      handler: (b: Omit<UnlockTokenRecord, 'at' | 'auditSeq'>) =>
        commit((now) => {
          const user = u.users.get(b.cn);
          const fields = { cn: b.cn, serial: b.serial, role: b.role, ecuType: b.ecuType, uid: b.uid, permissions: b.permissions };
          // the keystore checks the user again: the unlock service's view may be a moment old
          const why = userRefusal(user, now, b.serial) ?? (user!.role !== b.role ? refuse('PKS_UNLOCK_FORBIDDEN', 'role changed') : null);
          if (why) return deny(now, why, fields);
          if (Date.parse(b.notAfter) > Date.parse(user!.expiresAt)) return deny(now, refuse('PKS_UNLOCK_LIFETIME', 'token would outlive the user\'s access'), fields);
          if (u.tokens.doesExist(b.tokenId)) return refuse('PKS_CONFLICT', 'token id used before');
          const seq = record(dbs, now, 'grant', { ...fields, tokenId: b.tokenId, challenge: b.challenge, notBefore: b.notBefore, notAfter: b.notAfter, tokenKey: b.tokenKey });
          const rec: UnlockTokenRecord = { ...b, at: new Date(now).toISOString(), auditSeq: seq };
          u.tokens.putSync(b.tokenId, rec);
          return rec;
        }),
    },
    'unlock-deny': {
      request: obj(['cn', 'reason'], {
        cn: NAME,
        serial: SERIAL,
        role: { anyOf: [ROLE, { const: '' }] },
        ecuType: { type: 'string', maxLength: 32, pattern: '^[\\x21-\\x7e]*$' },
        uid: { type: 'string', maxLength: 64, pattern: '^[0-9a-fA-F]*$' },
        permissions: { type: 'string', maxLength: 32, pattern: '^[0-9a-f]*$' },
        action: { type: 'string', pattern: '^[a-z][a-z-]{0,31}$' },
        reason: { type: 'string', pattern: '^PKS_[A-Z_]{2,40}$' },
        detail: DETAIL,
      }),
      handler: (b: { cn: string; reason: string; detail?: string } & Record<string, string>) =>
        commit((now) => {
          const { reason, detail, ...fields } = b;
          return { seq: record(dbs, now, 'deny', { ...fields, cn: b.cn, reason: reason as ErrorCode, detail: detail ?? '' }) };
        }),
    },
    'unlock-log': {
      request: QUERY,
      handler: (q: { user?: string; ecu?: string; since?: string; limit: number }) => {
        const items: UnlockLogEntry[] = [];
        // newest first: the question is nearly always "what happened lately"
        for (const { value } of u.log.getRange({ reverse: true })) {
          if (q.since && value.at < new Date(q.since).toISOString()) break;
          if (matches(q, value)) items.push(value);
          if (items.length >= q.limit) break;
        }
        return { items };
      },
    },
    'unlock-tokens': {
      request: QUERY,
      handler: (q: { user?: string; ecu?: string; since?: string; limit: number }) => {
        const items: UnlockTokenRecord[] = [];
        for (const { value } of u.tokens.getRange({})) {
          if (matches(q, value)) items.push(value);
        }
        items.sort((a, b) => (a.at < b.at ? 1 : -1));
        return { items: items.slice(0, q.limit) };
      },
    },
  };
}
