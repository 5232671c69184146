// pksctl unlock ...: plant IT's side of the unlock service, over its pksctl socket. The
// approver the audit names is pksctl:<--as NAME> (default: the login user), so two people at
// the box give four eyes just as two console admins do.
import { createPublicKey } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';
import { decodeToken, describeToken, tokenSignatureValid } from '../unlock-token.js';
import { namesOf } from '../unlock-permissions.js';
import type { UnlockLogEntry, UnlockRequest, UnlockTokenRecord, UnlockUser } from '../contracts/unlock.js';

const USAGE = `usage:
  pksctl unlock onboard CN --role ROLE (--days N | --hours N | --seconds N) [--as NAME]
  pksctl unlock approve REQUEST-ID [--as NAME]
  pksctl unlock reject REQUEST-ID [--reason TEXT] [--as NAME]
  pksctl unlock revoke CN [--reason TEXT] [--as NAME]
  pksctl unlock cert CN --csr FILE --out FILE          (certificate for the user's own key)
  pksctl unlock cert CN --p12 FILE --passphrase-file F  (key and certificate made for the user)
  pksctl unlock users | requests [--state S] | roles   [--json]
  pksctl unlock log [--user CN] [--ecu UID] [--since ISO] [--limit N] [--json]
  pksctl unlock tokens [--user CN] [--ecu UID] [--since ISO] [--json]
  pksctl unlock public-key [TOKEN-KEY]     (PEM of the token verification keys, for ECU makers)
  pksctl unlock user-ca                    (PEM of the user CA)
  pksctl unlock show FILE [--json]         (decode a token file; checks it against the box's keys)`;

const num = (v: string | undefined, name: string): number | undefined => {
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw pksError('PKS_BAD_REQUEST', `--${name} needs a whole number`);
  return Number(v);
};

export async function unlockCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean' },
      role: { type: 'string' },
      days: { type: 'string' },
      hours: { type: 'string' },
      seconds: { type: 'string' },
      as: { type: 'string' },
      reason: { type: 'string' },
      csr: { type: 'string' },
      out: { type: 'string' },
      p12: { type: 'string' },
      'passphrase-file': { type: 'string' },
      state: { type: 'string' },
      user: { type: 'string' },
      ecu: { type: 'string' },
      since: { type: 'string' },
      limit: { type: 'string' },
    },
    allowPositionals: true,
    strict: true,
  });
  const [sub, arg, ...extra] = positionals;
  if (!sub || extra.length) throw pksError('PKS_BAD_REQUEST', USAGE);
  const as = v.as ?? process.env.SUDO_USER ?? os.userInfo().username;
  const emit = (data: unknown, text: () => string[]): void => {
    if (v.json) out(JSON.stringify(data));
    else for (const l of text()) out(l);
  };
  const query = (): Record<string, unknown> => {
    const q: Record<string, unknown> = {};
    if (v.user) q.user = v.user;
    if (v.ecu) q.ecu = v.ecu.toLowerCase();
    if (v.since) {
      const d = new Date(v.since);
      if (Number.isNaN(d.getTime())) throw pksError('PKS_BAD_REQUEST', '--since needs an ISO time');
      q.since = d.toISOString();
    }
    const limit = num(v.limit, 'limit');
    if (limit !== undefined) q.limit = limit;
    return q;
  };

  if (sub === 'show') {
    if (!arg) throw pksError('PKS_BAD_REQUEST', USAGE);
    const raw = readFileSync(arg);
    const t = decodeToken(raw.length === 420 && /^[0-9a-f]+$/i.test(raw.toString().trim()) ? Buffer.from(raw.toString().trim(), 'hex') : raw);
    let signer = 'unknown key';
    try {
      const keys = await withUnlock((c) => c.call<{ items: { tokenKey: string; keyId: string; spki: string }[] }>('public-keys'));
      const k = keys.items.find((x) => x.keyId === t.keyId.toString('hex'));
      if (k) signer = tokenSignatureValid(t, Buffer.from(k.spki, 'base64')) ? `token key ${k.tokenKey}: signature VALID` : `token key ${k.tokenKey}: signature INVALID`;
    } catch {
      signer = 'box not reachable: signature not checked';
    }
    const d = { ...describeToken(t), permissionNames: namesOf(t.permissions), signer };
    emit(d, () => Object.entries(d).map(([k, x]) => `${k.padEnd(16)} ${Array.isArray(x) ? x.join(', ') : String(x)}`));
    return signer.includes('INVALID') ? 1 : 0;
  }

  return withUnlock(async (c) => {
    switch (sub) {
      case 'onboard': {
        if (!arg || !v.role) throw pksError('PKS_BAD_REQUEST', USAGE);
        const days = num(v.days, 'days');
        const hours = num(v.hours, 'hours');
        const seconds = num(v.seconds, 'seconds');
        const accessSeconds = days !== undefined ? days * 86_400 : hours !== undefined ? hours * 3600 : seconds;
        if (accessSeconds === undefined) throw pksError('PKS_BAD_REQUEST', 'onboard needs --days, --hours or --seconds');
        const r = await c.call<UnlockRequest>('onboard', { cn: arg, role: v.role, accessSeconds, as });
        emit(r, () => [`request ${r.id}: ${r.cn} as ${r.role} for ${accessSeconds} s, needs ${r.approvalsNeeded} approval(s)${r.approvalsNeeded > 1 ? ' by two different admins' : ''}`]);
        return 0;
      }
      case 'approve': {
        if (!arg) throw pksError('PKS_BAD_REQUEST', USAGE);
        const r = await c.call<{ request: UnlockRequest; user?: UnlockUser }>('approve', { id: arg, as });
        emit(r, () => [r.user ? `${r.user.cn} is ACTIVE as ${r.user.role} until ${r.user.expiresAt}` : `approved ${r.request.approvals.length} of ${r.request.approvalsNeeded}: a second admin must approve`]);
        return 0;
      }
      case 'reject': {
        if (!arg) throw pksError('PKS_BAD_REQUEST', USAGE);
        const r = await c.call<UnlockRequest>('reject', { id: arg, as, ...(v.reason ? { reason: v.reason } : {}) });
        emit(r, () => [`request ${r.id} rejected`]);
        return 0;
      }
      case 'revoke': {
        if (!arg) throw pksError('PKS_BAD_REQUEST', USAGE);
        const r = await c.call<UnlockUser>('revoke', { cn: arg, as, ...(v.reason ? { reason: v.reason } : {}) });
        emit(r, () => [`${r.cn} revoked (${r.certs.length} certificate(s) with it); effective now`]);
        return 0;
      }
      case 'cert': {
        if (!arg) throw pksError('PKS_BAD_REQUEST', USAGE);
        if (v.csr && v.out) {
          const r = await c.call<{ certificate: string; serial: string; notAfter: string }>('certificate', { cn: arg, csr: readFileSync(v.csr, 'utf8'), as });
          writeFileSync(v.out, r.certificate);
          emit(r, () => [`certificate ${r.serial} for ${arg} until ${r.notAfter} written to ${v.out}`]);
          return 0;
        }
        if (v.p12 && v['passphrase-file']) {
          const passphrase = readFileSync(v['passphrase-file'], 'utf8').replace(/[\r\n]+$/, '');
          const r = await c.call<{ pkcs12: string; serial: string; notAfter: string }>('certificate', { cn: arg, passphrase, as });
          writeFileSync(v.p12, Buffer.from(r.pkcs12, 'base64'), { mode: 0o600 });
          emit({ serial: r.serial, notAfter: r.notAfter, file: v.p12 }, () => [`PKCS#12 with key and certificate ${r.serial} for ${arg} until ${r.notAfter} written to ${v.p12}`]);
          return 0;
        }
        throw pksError('PKS_BAD_REQUEST', USAGE);
      }
      case 'users': {
        const r = await c.call<{ items: UnlockUser[] }>('users');
        emit(r, () => r.items.map((u) => `${u.cn.padEnd(20)} ${u.role.padEnd(12)} ${u.state === 'REVOKED' ? 'REVOKED' : Date.parse(u.expiresAt) > Date.now() ? `until ${u.expiresAt}` : `EXPIRED ${u.expiresAt}`}  certificates ${u.certs.filter((x) => !x.revoked).length}`));
        return 0;
      }
      case 'requests': {
        const r = await c.call<{ items: UnlockRequest[] }>('requests', v.state ? { state: v.state } : {});
        emit(r, () => r.items.map((q) => `${q.id}  ${q.cn.padEnd(20)} ${q.role.padEnd(12)} ${q.state.padEnd(9)} approvals ${q.approvals.length}/${q.approvalsNeeded} (${q.approvals.join(', ') || '-'}) requested by ${q.requestedBy}`));
        return 0;
      }
      case 'roles': {
        const r = await c.call<{ roles: Record<string, unknown> }>('roles');
        emit(r, () => [JSON.stringify(r, null, 2)]);
        return 0;
      }
      case 'log': {
        const r = await c.call<{ items: UnlockLogEntry[] }>('log', query());
        emit(r, () =>
          r.items.map((e) => {
            const { seq, at, ev, cn, ...rest } = e;
            return `${at} #${seq} ${ev.padEnd(11)} ${cn.padEnd(16)} ${Object.entries(rest).map(([k, x]) => `${k}=${Array.isArray(x) ? x.join(',') : String(x)}`).join(' ')}`;
          }),
        );
        return 0;
      }
      case 'tokens': {
        const r = await c.call<{ items: UnlockTokenRecord[] }>('tokens', query());
        emit(r, () => r.items.map((t) => `${t.at} ${t.tokenId} ${t.cn.padEnd(16)} ${t.ecuType}/${t.uid} ${namesOf(BigInt(`0x${t.permissions}`)).join(',')} until ${t.notAfter}`));
        return 0;
      }
      case 'public-key': {
        const r = await c.call<{ items: { tokenKey: string; keyId: string; spki: string; ecuTypes: string[] }[] }>('public-keys');
        const items = r.items.filter((k) => !arg || k.tokenKey === arg);
        if (!items.length) throw pksError('PKS_KEY_UNKNOWN', `no token key '${arg}'`);
        const pem = (spki: string) => createPublicKey({ key: Buffer.from(spki, 'base64'), format: 'der', type: 'spki' }).export({ format: 'pem', type: 'spki' }).toString().trim();
        emit({ items }, () => items.flatMap((k) => [`# token key ${k.tokenKey}, key id ${k.keyId}, ECU types ${k.ecuTypes.join(', ')}`, pem(k.spki)]));
        return 0;
      }
      case 'user-ca': {
        const r = await c.call<{ certificate: string }>('user-ca');
        emit(r, () => [r.certificate.trim()]);
        return 0;
      }
      default:
        throw pksError('PKS_BAD_REQUEST', USAGE);
    }
  });
}

async function withUnlock<T>(fn: (c: ReturnType<typeof ipcClient>) => Promise<T>): Promise<T> {
  const c = ipcClient(socketPath('unlock', 'pksctl'), { timeoutMs: 15_000, connections: 1 });
  try {
    return await fn(c);
  } finally {
    await c.close();
  }
}
