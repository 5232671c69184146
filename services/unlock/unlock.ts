// What the unlock service does, whoever asks (the console over mTLS, pksctl and central ops over
// local sockets): onboarding with approvals (two different admins for a high-privilege role),
// user certificates from the HSM's user CA, tokens for exactly what a role allows on an ECU
// type, revocation. It keeps no state of its own: users, requests, certificates and tokens are
// records in the keystore (written with their audit entry before anything leaves), and it asks
// the keystore about the user on every request, so a revocation counts from the next request.
import { execFile } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import type { DeepReadonly } from '../../appliance/config.js';
import { PksError, asPksError, pksError, type ErrorCode } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { maskOf, namesOf, roleMask, autosarRole, type RoleSpec } from '../../appliance/unlock-permissions.js';
import { CHALLENGE_MAX, CHALLENGE_MIN, decodeToken, describeToken, maskHex } from '../../appliance/unlock-token.js';
import { checkP256Csr, newSerial } from '../../appliance/x509.js';
import type { UnlockLogEntry, UnlockRequest, UnlockTokenRecord, UnlockUser } from '../../appliance/contracts/unlock.js';
import type { UnlockConfig } from './config.js';
import { Gcra } from './limits.js';

export interface Caller {
  call<T = unknown>(verb: string, body?: unknown, timeoutMs?: number): Promise<T>;
}

/** Who is asking, as TLS proved it (console) or as the local socket says (pksctl, ops). */
export interface Identity {
  cn: string;
  /** hex of the client certificate's serial (console users only) */
  serial?: string;
}

export interface TokenAsk {
  ecuType: string;
  uid: string;
  challenge: string;
  /** permission names; default: all the role gives for this ECU type */
  permissions?: string[];
  lifetimeSeconds?: number;
}

export interface IssuedToken {
  tokenId: string;
  token: string;
  tokenHex: string;
  keyId: string;
  ecuType: string;
  uid: string;
  permissions: string;
  permissionNames: string[];
  autosarRole: number;
  notBefore: string;
  notAfter: string;
}

const UNREACHABLE = new Set<ErrorCode>(['PKS_IPC_UNAVAILABLE', 'PKS_IPC_TIMEOUT', 'PKS_IPC_PROTOCOL', 'PKS_IPC_FORBIDDEN', 'PKS_IPC_UNKNOWN_VERB']);
const HEX = /^[0-9a-fA-F]*$/;
const ECU_UID_MAX = 32;

export class Unlock {
  readonly #tokenRate: Gcra;
  /** when a user's last rate-limit denial was logged: one entry per minute is enough */
  readonly #limitLogged = new Map<string, number>();
  #caPem: Promise<string> | null = null;
  readonly counters = { tokens: 0, denied: 0, rateLimited: 0 };

  constructor(
    readonly cfg: DeepReadonly<UnlockConfig>,
    private readonly keystore: Caller,
    private readonly vault: Caller,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    this.#tokenRate = new Gcra(cfg.limits.tokensPerMinute / 60, cfg.limits.tokenBurst, now);
  }

  /** Calls a local service; unreachable is PKS_SERVICE_UNAVAILABLE, internals never pass through. */
  async up<T>(who: 'keystore' | 'vault', verb: string, body: unknown): Promise<T> {
    try {
      return await (who === 'keystore' ? this.keystore : this.vault).call<T>(verb, body, this.cfg.ipc.timeoutMs);
    } catch (err) {
      const e = asPksError(err);
      if (UNREACHABLE.has(e.code)) {
        this.log.warn(`${who} call failed`, { verb, code: e.code, detail: e.detail });
        throw pksError('PKS_SERVICE_UNAVAILABLE', `${who} is not reachable`);
      }
      if (e.code === 'PKS_INTERNAL') throw pksError('PKS_INTERNAL');
      throw e;
    }
  }

  role(name: string): DeepReadonly<RoleSpec> | undefined {
    return Object.prototype.hasOwnProperty.call(this.cfg.roles, name) ? this.cfg.roles[name] : undefined;
  }

  /** The user behind a console certificate, checked now: ACTIVE, not expired, this certificate theirs. */
  async user(id: Identity): Promise<UnlockUser> {
    const u = await this.up<UnlockUser>('keystore', 'unlock-user-get', { cn: id.cn });
    const t = this.now();
    if (u.state === 'REVOKED') throw pksError('PKS_UNLOCK_REVOKED', 'access is revoked');
    if (!(Date.parse(u.expiresAt) > t)) throw pksError('PKS_UNLOCK_EXPIRED', `access ended ${u.expiresAt}`);
    if (id.serial !== undefined) {
      const c = u.certs.find((x) => x.serial === id.serial);
      if (!c || c.revoked) throw pksError('PKS_UNLOCK_REVOKED', 'certificate is not (or no longer) valid for this user');
      if (!(Date.parse(c.notAfter) > t)) throw pksError('PKS_UNLOCK_EXPIRED', 'certificate has expired');
    }
    return u;
  }

  async admin(id: Identity): Promise<UnlockUser> {
    const u = await this.user(id);
    if (!this.role(u.role)?.admin) throw pksError('PKS_UNLOCK_FORBIDDEN', 'admins only');
    return u;
  }

  /** Logs a refusal of someone we could name, then throws it; the log is all a refusal changes. */
  async refuse(id: Identity, e: PksError, fields: Record<string, unknown> = {}): Promise<never> {
    this.counters.denied++;
    try {
      await this.up('keystore', 'unlock-deny', { cn: id.cn, ...(id.serial ? { serial: id.serial } : {}), ...fields, reason: e.code, detail: e.detail.slice(0, 200).replace(/[^\x20-\x7e]/g, '?') });
    } catch (le) {
      this.log.warn('denial not logged', { code: asPksError(le).code, cn: id.cn });
    }
    throw e;
  }

  me(u: UnlockUser): Record<string, unknown> {
    const role = this.role(u.role);
    return {
      cn: u.cn,
      role: u.role,
      admin: role?.admin === true,
      expiresAt: u.expiresAt,
      maxTokenSeconds: role?.maxTokenSeconds ?? 0,
      ecuTypes: Object.keys(this.cfg.ecuTypes).map((t) => ({ ecuType: t, permissions: namesOf(roleMask(role as RoleSpec, t)) })),
    };
  }

  // ---- tokens

  async requestToken(id: Identity, ask: TokenAsk): Promise<IssuedToken> {
    const fields: Record<string, unknown> = { ecuType: String(ask.ecuType ?? '').slice(0, 32), uid: HEX.test(String(ask.uid)) ? String(ask.uid).slice(0, 64).toLowerCase() : '' };
    let user: UnlockUser;
    try {
      user = await this.user(id);
    } catch (err) {
      const e = asPksError(err);
      if (e.code === 'PKS_SERVICE_UNAVAILABLE') throw e;
      return this.refuse(id, e, fields);
    }
    fields.role = user.role;
    const wait = this.#tokenRate.take(id.cn);
    if (wait > 0) {
      this.counters.rateLimited++;
      const e = Object.assign(pksError('PKS_RATE_LIMITED', 'token requests over the limit for this user'), { retryAfterS: Math.max(1, Math.ceil(wait / 1000)) });
      const last = this.#limitLogged.get(id.cn) ?? 0;
      if (this.now() - last < 60_000) throw e;
      this.#limitLogged.set(id.cn, this.now());
      return this.refuse(id, e, fields);
    }
    const role = this.role(user.role);
    const ecu = Object.prototype.hasOwnProperty.call(this.cfg.ecuTypes, ask.ecuType) ? this.cfg.ecuTypes[ask.ecuType] : undefined;
    const uid = String(ask.uid).toLowerCase();
    const challenge = String(ask.challenge).toLowerCase();
    const bad = (code: ErrorCode, detail: string): Promise<never> => this.refuse(id, pksError(code, detail), fields);
    if (!ecu) return bad('PKS_NOT_FOUND', `no such ECU type '${fields.ecuType as string}'`);
    if (!HEX.test(uid) || uid.length < 2 || uid.length % 2 || uid.length > ECU_UID_MAX * 2) return bad('PKS_BAD_HEX', `uid must be hex of 1..${ECU_UID_MAX} bytes`);
    if (!HEX.test(challenge) || challenge.length % 2 || challenge.length < CHALLENGE_MIN * 2 || challenge.length > CHALLENGE_MAX * 2) return bad('PKS_BAD_HEX', `challenge must be hex of ${CHALLENGE_MIN}..${CHALLENGE_MAX} bytes`);
    const allowed = roleMask(role as RoleSpec, ask.ecuType);
    if (!role || allowed === 0n) return bad('PKS_UNLOCK_FORBIDDEN', `role ${user.role} gives nothing on ${ask.ecuType}`);
    let wanted = allowed;
    if (ask.permissions?.length) {
      try {
        wanted = maskOf(ask.permissions);
      } catch (e) {
        return this.refuse(id, asPksError(e), fields);
      }
      if ((wanted & ~allowed) !== 0n) return this.refuse(id, pksError('PKS_UNLOCK_FORBIDDEN', `role ${user.role} does not give ${namesOf(wanted & ~allowed).join(', ')} on ${ask.ecuType}`), { ...fields, permissions: maskHex(wanted) });
    }
    fields.permissions = maskHex(wanted);
    const lifetime = ask.lifetimeSeconds ?? role.maxTokenSeconds;
    if (lifetime > role.maxTokenSeconds) return bad('PKS_UNLOCK_LIFETIME', `role ${user.role} allows tokens of at most ${role.maxTokenSeconds} s`);
    const nb = Math.floor(this.now() / 1000);
    // a token never outlives the access it was granted under
    const na = Math.min(nb + lifetime, Math.floor(Date.parse(user.expiresAt) / 1000));
    if (na <= nb) return bad('PKS_UNLOCK_EXPIRED', 'access ends before a token could start');
    const tokenId = randomBytes(16).toString('hex');
    const rec = {
      tokenId,
      cn: user.cn,
      serial: id.serial!,
      role: user.role,
      ecuType: ask.ecuType,
      uid,
      challenge,
      permissions: maskHex(wanted),
      notBefore: new Date(nb * 1000).toISOString(),
      notAfter: new Date(na * 1000).toISOString(),
      tokenKey: ecu.tokenKey,
    };
    // on record (audit + outbox, on disk) first; only then does the vault sign
    await this.up<UnlockTokenRecord>('keystore', 'unlock-grant', rec);
    const signed = await this.up<{ token: string; keyId: string }>('vault', 'unlock-token-sign', {
      key: ecu.tokenKey,
      tokenId,
      ecuType: ask.ecuType,
      uid,
      challenge,
      permissions: rec.permissions,
      notBefore: nb,
      notAfter: na,
    });
    this.counters.tokens++;
    const raw = Buffer.from(signed.token, 'base64');
    const t = decodeToken(raw);
    const d = describeToken(t);
    return {
      tokenId,
      token: signed.token,
      tokenHex: raw.toString('hex'),
      keyId: signed.keyId,
      ecuType: ask.ecuType,
      uid,
      permissions: rec.permissions,
      permissionNames: namesOf(wanted),
      autosarRole: autosarRole(wanted),
      notBefore: d.notBefore as string,
      notAfter: d.notAfter as string,
    };
  }

  // ---- users

  async onboard(by: string, b: { cn: string; role: string; accessSeconds: number }): Promise<UnlockRequest> {
    const role = this.role(b.role);
    if (!role) throw pksError('PKS_NOT_FOUND', `no role '${String(b.role).slice(0, 32)}'`);
    if (!Number.isSafeInteger(b.accessSeconds) || b.accessSeconds < 1 || b.accessSeconds > role.maxAccessDays * 86_400)
      throw pksError('PKS_OUT_OF_RANGE', `access for ${b.role} is 1 s .. ${role.maxAccessDays} days`);
    const id = randomBytes(8).toString('hex');
    return this.up<UnlockRequest>('keystore', 'unlock-request-put', { id, cn: b.cn, role: b.role, accessSeconds: b.accessSeconds, requestedBy: by, approvalsNeeded: role.highPrivilege ? 2 : 1 });
  }

  approve(by: string, id: string): Promise<{ request: UnlockRequest; user?: UnlockUser }> {
    return this.up('keystore', 'unlock-approve', { id, admin: by });
  }

  reject(by: string, id: string, reason?: string): Promise<UnlockRequest> {
    return this.up('keystore', 'unlock-reject', { id, admin: by, ...(reason ? { reason } : {}) });
  }

  revoke(by: string, cn: string, reason?: string): Promise<UnlockUser> {
    return this.up('keystore', 'unlock-revoke', { cn, by, ...(reason ? { reason } : {}) });
  }

  userCa(): Promise<string> {
    this.#caPem ??= this.up<{ certificate: string }>('vault', 'unlock-user-ca-cert', {}).then(
      (r) => r.certificate,
      (e: unknown) => {
        this.#caPem = null;
        throw e;
      },
    );
    return this.#caPem;
  }

  /** A certificate for an ACTIVE user: on record first, then signed by the HSM user CA. */
  async certify(by: string, cn: string, spki: Buffer): Promise<{ certificate: string; serial: string; notAfter: string }> {
    const user = await this.up<UnlockUser>('keystore', 'unlock-user-get', { cn });
    const serial = newSerial();
    const want = new Date(this.now() + this.cfg.certificates.validityDays * 86_400_000).toISOString();
    const r = await this.up<{ serial: string; notAfter: string }>('keystore', 'unlock-cert-record', { cn, serial, notAfter: want, by });
    return this.up('vault', 'unlock-user-cert', { cn, role: user.role, serial, spki: spki.toString('base64'), notAfter: r.notAfter });
  }

  /** CSR upload: the user keeps their key; the CN must be the user's. */
  async certifyCsr(by: string, cn: string, csrPem: string): Promise<{ certificate: string; serial: string; notAfter: string; caCertificate: string }> {
    const { spki, cn: csrCn } = await checkP256Csr(csrPem);
    if (csrCn !== cn) throw pksError('PKS_CSR_INVALID', 'csr subject CN must be the user name');
    return { ...(await this.certify(by, cn, spki)), caCertificate: await this.userCa() };
  }

  /** PKCS#12 made for the user: key made here, in memory only, handed over encrypted once. */
  async certifyPkcs12(by: string, cn: string, passphrase: string): Promise<{ pkcs12: string; serial: string; notAfter: string; caCertificate: string }> {
    if (typeof passphrase !== 'string' || passphrase.length < 8 || passphrase.length > 128) throw pksError('PKS_BAD_REQUEST', 'passphrase must be 8..128 characters');
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = pair.publicKey.export({ format: 'der', type: 'spki' });
    const cert = await this.certify(by, cn, spki);
    const ca = await this.userCa();
    const keyPem = pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
    const p12 = await new Promise<Buffer>((resolve, reject) => {
      // the passphrase goes by environment to this one child, never on its command line
      const child = execFile(
        'openssl',
        ['pkcs12', '-export', '-name', cn, '-passout', 'env:PKS_P12_PASS', '-keypbe', 'AES-256-CBC', '-certpbe', 'AES-256-CBC', '-macalg', 'sha256'],
        { encoding: 'buffer', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', PKS_P12_PASS: passphrase }, timeout: 10_000, maxBuffer: 1 << 20 },
        (err, stdout) => (err ? reject(pksError('PKS_INTERNAL', 'PKCS#12 could not be made', err)) : resolve(stdout)),
      );
      child.stdin!.end(keyPem + cert.certificate + ca);
    });
    return { pkcs12: p12.toString('base64'), serial: cert.serial, notAfter: cert.notAfter, caCertificate: ca };
  }

  // ---- queries

  users(): Promise<{ items: UnlockUser[] }> {
    return this.up('keystore', 'unlock-users', {});
  }
  requests(state?: string): Promise<{ items: UnlockRequest[] }> {
    return this.up('keystore', 'unlock-requests', state ? { state } : {});
  }
  logQuery(q: { user?: string; ecu?: string; since?: string; limit?: number }): Promise<{ items: UnlockLogEntry[] }> {
    return this.up('keystore', 'unlock-log', q);
  }
  tokens(q: { user?: string; ecu?: string; since?: string; limit?: number }): Promise<{ items: UnlockTokenRecord[] }> {
    return this.up('keystore', 'unlock-tokens', q);
  }

  /** The token verification keys, for ECU makers: one per token key the ECU types use. */
  async publicKeys(): Promise<{ items: { tokenKey: string; keyId: string; spki: string; ecuTypes: string[] }[] }> {
    const names = [...new Set(Object.values(this.cfg.ecuTypes).map((e) => e.tokenKey))];
    const items = [];
    for (const k of names) {
      const r = await this.up<{ spki: string; keyId: string }>('vault', 'unlock-public-key', { key: k });
      items.push({ tokenKey: k, keyId: r.keyId, spki: r.spki, ecuTypes: Object.entries(this.cfg.ecuTypes).filter(([, e]) => e.tokenKey === k).map(([t]) => t) });
    }
    return { items };
  }
}

