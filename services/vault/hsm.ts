// The vault's PKCS#11 layer: one logged-in RW session on the token found by label, the named
// key hierarchy, and the few operations the vault performs with it. Keys never leave the HSM;
// only the ECDH shared secret does, by design, into this process and no further.
// pkcs11js calls are synchronous and block the event loop, so every operation here is a handful
// of short calls on small inputs (sizes are capped below).
import { createHash } from 'node:crypto';
import { isAbsolute } from 'node:path';
import pkcs11js from 'pkcs11js';
import type { ECDH1, Handle, Template } from 'pkcs11js';
import { isPksError, pksError } from '../../appliance/errors.js';
import { p256PointFromSpki, pointFromEcPoint, spkiFromPoint, P256_EC_PARAMS } from '../../appliance/ec-der.js';
import {
  KEY_NAMES,
  KEY_SPECS,
  PUBLIC_KEYS,
  SIGNING_KEYS,
  aesTemplate,
  ecPairTemplates,
  expectations,
  keyLabel,
  objectClass,
  type KeyName,
  type KeyPart,
  type KeySpec,
  type PublicKeyName,
  type SigningKeyName,
} from './hsm-keys.js';
import { ckrName, isKeyGone, isSessionLost, mapP11Error } from './p11-errors.js';
import { acquireModule, moduleUsers, reinitialiseModule, releaseModule, type P11 } from './p11-module.js';

export { rawToDer } from '../../appliance/ec-der.js';
export type { KeyName } from './hsm-keys.js';

export interface HsmConfig {
  /** absolute path of the PKCS#11 module */
  module: string;
  tokenLabel: string;
  pin: string;
  /** SoftHSM only: SOFTHSM2_CONF to put in the environment before C_Initialize */
  softhsm2Conf?: string;
}

export interface HsmStatus {
  tokenLabel: string;
  manufacturer: string;
  model: string;
  serial: string;
  keys: Record<KeyName, boolean>;
  loggedIn: boolean;
}

const MAX_SEAL_PLAINTEXT = 64 * 1024;
const MAX_AAD = 1024;
const MAX_SIGN_INPUT = 1024 * 1024;
const MAX_RANDOM = 64 * 1024;
const GCM_IV_LEN = 12;
const GCM_TAG_LEN = 16;

const CKS_RO_USER_FUNCTIONS = 1;
const CKS_RW_USER_FUNCTIONS = 3;
const CKF_USER_PIN_LOCKED = 0x40000;
const CKF_USER_PIN_INITIALIZED = 0x8;

interface TokenFacts {
  manufacturer: string;
  model: string;
  serial: string;
}

function validateConfig(cfg: unknown): Readonly<HsmConfig> {
  const c = (cfg ?? {}) as Partial<Record<keyof HsmConfig, unknown>>;
  const bad = (field: string, why: string): never => {
    throw pksError('PKS_CONFIG_INVALID', `hsm.${field} ${why}`);
  };
  if (typeof c.module !== 'string' || !isAbsolute(c.module)) bad('module', 'must be an absolute path');
  if (typeof c.tokenLabel !== 'string' || c.tokenLabel.length < 1 || Buffer.byteLength(c.tokenLabel) > 32) {
    bad('tokenLabel', 'must be 1..32 bytes');
  }
  if (typeof c.tokenLabel === 'string' && c.tokenLabel !== c.tokenLabel.trimEnd()) {
    bad('tokenLabel', 'must not end in blanks');
  }
  // the PIN's value is never echoed, only its shape
  if (typeof c.pin !== 'string' || c.pin.length < 4 || c.pin.length > 255) bad('pin', 'must be 4..255 characters');
  if (c.softhsm2Conf !== undefined && (typeof c.softhsm2Conf !== 'string' || !isAbsolute(c.softhsm2Conf))) {
    bad('softhsm2Conf', 'must be an absolute path');
  }
  return Object.freeze({
    module: c.module as string,
    tokenLabel: c.tokenLabel as string,
    pin: c.pin as string,
    ...(c.softhsm2Conf !== undefined ? { softhsm2Conf: c.softhsm2Conf as string } : {}),
  });
}

const readBool = (v: Buffer | undefined): boolean | undefined => (v && v.length >= 1 ? v[0] !== 0 : undefined);

function readUlong(v: Buffer | undefined): number | undefined {
  if (!v) return undefined;
  if (v.length === 8) return Number(v.readBigUInt64LE(0));
  if (v.length === 4) return v.readUInt32LE(0);
  return undefined;
}

function requireBuffer(v: unknown, what: string, max: number): Buffer {
  if (!Buffer.isBuffer(v)) throw pksError('PKS_BAD_REQUEST', `${what} must be bytes`);
  if (v.length > max) throw pksError('PKS_TOO_LARGE', `${what} exceeds ${max} bytes`);
  return v;
}

/** The public data object a zeroized token keeps (issue 16 §3). */
export const ZEROIZED_LABEL = 'pks-zeroized';

export class Hsm {
  readonly #cfg: Omit<HsmConfig, 'pin'>;
  // a private field: not enumerable, not printed by util.inspect, not in JSON
  readonly #pin: string;
  #p11: P11 | null;
  #slot: Handle | null = null;
  #session: Handle | null = null;
  #token: TokenFacts = { manufacturer: '', model: '', serial: '' };
  /** object handles by `${name}/${part}`; handles are stable while the session lives */
  readonly #handles = new Map<string, Handle>();
  readonly #spki = new Map<PublicKeyName, Buffer>();

  private constructor(cfg: Readonly<HsmConfig>, p11: P11) {
    const { pin, ...rest } = cfg;
    this.#cfg = rest;
    this.#pin = pin;
    this.#p11 = p11;
  }

  /** Loads the module, finds the token by label, opens an RW session and logs the user in. */
  static open(cfg: HsmConfig): Hsm {
    const c = validateConfig(cfg);
    const p11 = acquireModule(c.module, c.softhsm2Conf);
    const hsm = new Hsm(c, p11);
    try {
      hsm.#connect();
    } catch (e) {
      hsm.close();
      throw mapP11Error(e, 'open');
    }
    return hsm;
  }

  #lib(): P11 {
    if (!this.#p11) throw pksError('PKS_HSM_FAILURE', 'HSM connection is closed');
    return this.#p11;
  }

  #findSlot(p11: P11): Handle {
    let slots: Handle[];
    try {
      slots = p11.C_GetSlotList(true);
    } catch (e) {
      throw mapP11Error(e, 'C_GetSlotList');
    }
    const matches: Handle[] = [];
    for (const slot of slots) {
      try {
        const info = p11.C_GetTokenInfo(slot);
        if (info.label.trimEnd() === this.#cfg.tokenLabel) {
          matches.push(slot);
          this.#token = {
            manufacturer: info.manufacturerID.trimEnd(),
            model: info.model.trimEnd(),
            serial: info.serialNumber.trimEnd(),
          };
          if (info.flags & CKF_USER_PIN_LOCKED) throw pksError('PKS_HSM_LOGIN', 'user PIN is locked');
          if (!(info.flags & CKF_USER_PIN_INITIALIZED)) throw pksError('PKS_HSM_LOGIN', 'user PIN is not initialised');
        }
      } catch (e) {
        if (isPksError(e)) throw e;
        // a slot whose token vanished between the two calls is simply not ours
      }
    }
    if (matches.length === 0) throw pksError('PKS_HSM_TOKEN', `no token labelled '${this.#cfg.tokenLabel}'`);
    if (matches.length > 1) throw pksError('PKS_HSM_TOKEN', `${matches.length} tokens labelled '${this.#cfg.tokenLabel}'`);
    return matches[0]!;
  }

  #connect(): void {
    const p11 = this.#lib();
    this.#handles.clear();
    this.#spki.clear();
    const slot = this.#findSlot(p11);
    let session: Handle;
    try {
      session = p11.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    } catch (e) {
      throw mapP11Error(e, 'C_OpenSession');
    }
    try {
      p11.C_Login(session, pkcs11js.CKU_USER, this.#pin);
    } catch (e) {
      const ckr = ckrName(e);
      // login state is per application: another session of ours is already logged in
      if (ckr !== 'CKR_USER_ALREADY_LOGGED_IN') {
        try {
          p11.C_CloseSession(session);
        } catch {
          // the login error is the one worth reporting
        }
        if (ckr === 'CKR_PIN_INCORRECT') throw pksError('PKS_HSM_LOGIN', 'user PIN rejected', e);
        if (ckr === 'CKR_PIN_LOCKED') throw pksError('PKS_HSM_LOGIN', 'user PIN is locked', e);
        throw mapP11Error(e, 'C_Login', ckr && ckr.startsWith('CKR_PIN') ? 'PKS_HSM_LOGIN' : undefined);
      }
    }
    this.#slot = slot;
    this.#session = session;
  }

  #dropSession(): void {
    const p11 = this.#p11;
    const session = this.#session;
    this.#session = null;
    this.#handles.clear();
    this.#spki.clear();
    if (p11 && session) {
      try {
        p11.C_CloseSession(session);
      } catch {
        // a lost session cannot be closed; that is why we are here
      }
    }
  }

  /** One attempt to get a working session back: new session first, whole module second. */
  #reconnect(): void {
    this.#dropSession();
    try {
      this.#connect();
      return;
    } catch (e) {
      // a wrong PIN will not improve; a vanished slot may (modules list slots at C_Initialize)
      if (isPksError(e) && e.code === 'PKS_HSM_LOGIN') throw e;
      if (!reinitialiseModule(this.#cfg.module)) throw mapP11Error(e, 're-open');
    }
    this.#connect();
  }

  #sess(): Handle {
    this.#lib();
    if (!this.#session) this.#reconnect();
    return this.#session!;
  }

  /**
   * Runs fn on the live session; if the session turns out lost, re-opens once and runs fn again.
   * fn must be safe to repeat (each of ours starts its operation from scratch).
   */
  #run<T>(op: string, fn: (p11: P11, session: Handle) => T): T {
    const p11 = this.#lib();
    try {
      return fn(p11, this.#sess());
    } catch (e) {
      if (isKeyGone(e)) {
        this.#handles.clear();
        this.#spki.clear();
      }
      if (!isSessionLost(e)) throw mapP11Error(e, op);
    }
    this.#reconnect();
    try {
      return fn(p11, this.#sess());
    } catch (e) {
      throw mapP11Error(e, op);
    }
  }

  #find(p11: P11, session: Handle, template: Template): Handle[] {
    p11.C_FindObjectsInit(session, template);
    try {
      // two are enough to tell "exactly one" from "ambiguous"
      return p11.C_FindObjects(session, 2);
    } finally {
      p11.C_FindObjectsFinal(session);
    }
  }

  /** Handle of a key object, or null when absent; throws on duplicates (which one is ours?). */
  #lookup(p11: P11, session: Handle, spec: KeySpec, part: KeyPart): Handle | null {
    const cacheKey = `${spec.name}/${part}`;
    const cached = this.#handles.get(cacheKey);
    if (cached) return cached;
    const found = this.#find(p11, session, [
      { type: pkcs11js.CKA_CLASS, value: objectClass(spec, part) },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: keyLabel(spec.name) },
    ]);
    if (found.length > 1) throw pksError('PKS_HSM_KEY_POLICY', `${keyLabel(spec.name)} (${part}) exists more than once`);
    if (found.length === 0) return null;
    this.#handles.set(cacheKey, found[0]!);
    return found[0]!;
  }

  #key(p11: P11, session: Handle, name: KeyName, part: KeyPart): Handle {
    const h = this.#lookup(p11, session, KEY_SPECS[name], part);
    if (!h) throw pksError('PKS_HSM_KEY_MISSING', `${keyLabel(name)} (${part}) is missing`);
    return h;
  }

  #parts(spec: KeySpec): KeyPart[] {
    return spec.kind === 'ec' ? ['private', 'public'] : ['private'];
  }

  /** Creates the keys that are missing. A half-present EC pair is an error, not a repair job. */
  ensureHierarchy(): { created: KeyName[] } {
    return this.#run('ensureHierarchy', (p11, session) => {
      const created: KeyName[] = [];
      for (const name of KEY_NAMES) {
        const spec = KEY_SPECS[name];
        const present = this.#parts(spec).map((part) => this.#lookup(p11, session, spec, part) !== null);
        if (present.every(Boolean)) continue;
        if (present.some(Boolean)) {
          throw pksError('PKS_HSM_KEY_MISSING', `${keyLabel(name)} is half present; restore it or remove it by hand`);
        }
        if (spec.kind === 'ec') {
          const t = ecPairTemplates(spec);
          const pair = p11.C_GenerateKeyPair(session, { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN }, t.pub, t.priv);
          this.#handles.set(`${name}/private`, pair.privateKey);
          this.#handles.set(`${name}/public`, pair.publicKey);
        } else {
          const h = p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, aesTemplate(spec));
          this.#handles.set(`${name}/private`, h);
        }
        created.push(name);
      }
      return { created };
    });
  }

  /** Every key present with the attributes the table demands, else KEY_MISSING / KEY_POLICY. */
  checkHierarchy(): void {
    this.#run('checkHierarchy', (p11, session) => {
      for (const name of KEY_NAMES) {
        const spec = KEY_SPECS[name];
        for (const part of this.#parts(spec)) {
          const h = this.#key(p11, session, name, part);
          const want = expectations(spec, part);
          const shape: Template = [{ type: pkcs11js.CKA_KEY_TYPE }];
          if (spec.kind === 'ec') shape.push({ type: pkcs11js.CKA_EC_PARAMS });
          else shape.push({ type: pkcs11js.CKA_VALUE_LEN });
          const got = p11.C_GetAttributeValue(session, h, [...want.map(([type]) => ({ type })), ...shape]);
          const byType = new Map(got.map((a) => [a.type, a.value]));
          const where = `${keyLabel(name)} (${part})`;
          for (const [type, value, attrName] of want) {
            if (readBool(byType.get(type)) !== value) {
              throw pksError('PKS_HSM_KEY_POLICY', `${where}: ${attrName} must be ${value}`);
            }
          }
          const keyType = readUlong(byType.get(pkcs11js.CKA_KEY_TYPE));
          if (spec.kind === 'ec') {
            const params = byType.get(pkcs11js.CKA_EC_PARAMS);
            if (keyType !== pkcs11js.CKK_EC || !params || !params.equals(P256_EC_PARAMS)) {
              throw pksError('PKS_HSM_KEY_POLICY', `${where}: must be an EC P-256 key`);
            }
          } else if (keyType !== pkcs11js.CKK_AES || readUlong(byType.get(pkcs11js.CKA_VALUE_LEN)) !== 32) {
            throw pksError('PKS_HSM_KEY_POLICY', `${where}: must be an AES-256 key`);
          }
        }
      }
    });
  }

  /** Never throws: status is what an operator reads when things are already wrong. */
  status(): HsmStatus {
    const keys = Object.fromEntries(KEY_NAMES.map((n) => [n, false])) as Record<KeyName, boolean>;
    const out: HsmStatus = { tokenLabel: this.#cfg.tokenLabel, ...this.#token, keys, loggedIn: false };
    const p11 = this.#p11;
    const session = this.#session;
    if (!p11 || !session) return out;
    try {
      const info = p11.C_GetTokenInfo(this.#slot!);
      out.manufacturer = info.manufacturerID.trimEnd();
      out.model = info.model.trimEnd();
      out.serial = info.serialNumber.trimEnd();
    } catch {
      // keep the facts learned at open
    }
    try {
      const state = p11.C_GetSessionInfo(session).state;
      out.loggedIn = state === CKS_RW_USER_FUNCTIONS || state === CKS_RO_USER_FUNCTIONS;
    } catch {
      return out;
    }
    for (const name of KEY_NAMES) {
      try {
        const spec = KEY_SPECS[name];
        keys[name] = this.#parts(spec).every((part) => this.#lookup(p11, session, spec, part) !== null);
      } catch {
        keys[name] = false;
      }
    }
    return out;
  }

  /** Cheap liveness check; re-opens and logs in once when the session is gone. */
  ping(): void {
    const p11 = this.#lib();
    const alive = (): boolean => {
      if (!this.#session) return false;
      try {
        const state = p11.C_GetSessionInfo(this.#session).state;
        return state === CKS_RW_USER_FUNCTIONS || state === CKS_RO_USER_FUNCTIONS;
      } catch (e) {
        if (isSessionLost(e)) return false;
        throw mapP11Error(e, 'C_GetSessionInfo');
      }
    };
    if (alive()) return;
    this.#reconnect();
    if (!alive()) throw pksError('PKS_HSM_LOGIN', 'session is not logged in after re-open');
  }

  publicKey(name: PublicKeyName): Buffer {
    if (!(PUBLIC_KEYS as readonly string[]).includes(name)) throw pksError('PKS_KEY_UNKNOWN', 'no public key by that name');
    const cached = this.#spki.get(name);
    if (cached) return Buffer.from(cached);
    const spki = this.#run('publicKey', (p11, session) => {
      const h = this.#key(p11, session, name, 'public');
      const [attr] = p11.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_EC_POINT }]);
      return spkiFromPoint(pointFromEcPoint(attr!.value));
    });
    this.#spki.set(name, spki);
    return Buffer.from(spki);
  }

  /** ECDSA P-256 over SHA-256(data); raw r||s (64 bytes). rawToDer() makes it X.509-ready. */
  sign(name: SigningKeyName, data: Buffer): Buffer {
    if (!SIGNING_KEYS.includes(name)) throw pksError('PKS_KEY_UNKNOWN', 'no signing key by that name');
    const input = requireBuffer(data, 'data to sign', MAX_SIGN_INPUT);
    // SoftHSM has no CKM_ECDSA_SHA256; hashing here is equivalent and keeps the HSM call short
    const digest = createHash('sha256').update(input).digest();
    const sig = this.#run('sign', (p11, session) => {
      const h = this.#key(p11, session, name, 'private');
      p11.C_SignInit(session, { mechanism: pkcs11js.CKM_ECDSA }, h);
      return p11.C_Sign(session, digest, Buffer.alloc(64));
    });
    if (sig.length !== 64) throw pksError('PKS_HSM_FAILURE', 'sign: unexpected signature length');
    return sig;
  }

  /** Raw ECDH (CKD_NULL) of the transport key with a peer P-256 SPKI; the 32-byte x coordinate. */
  ecdh(peerSpkiDer: Buffer): Buffer {
    const peerPoint = p256PointFromSpki(peerSpkiDer);
    const params: ECDH1 = { type: pkcs11js.CK_PARAMS_EC_DH, kdf: pkcs11js.CKD_NULL, publicData: peerPoint };
    return this.#run('ecdh', (p11, session) => {
      const h = this.#key(p11, session, 'transport', 'private');
      const derived = p11.C_DeriveKey(
        session,
        { mechanism: pkcs11js.CKM_ECDH1_DERIVE, parameter: params },
        h,
        [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
          { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
          { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
          // a short-lived session object that exists only to be read out and destroyed
          { type: pkcs11js.CKA_TOKEN, value: false },
          { type: pkcs11js.CKA_PRIVATE, value: true },
          { type: pkcs11js.CKA_SENSITIVE, value: false },
          { type: pkcs11js.CKA_EXTRACTABLE, value: true },
        ],
      );
      try {
        const [attr] = p11.C_GetAttributeValue(session, derived, [{ type: pkcs11js.CKA_VALUE }]);
        const secret = Buffer.from(attr!.value);
        if (secret.length !== 32) throw pksError('PKS_HSM_FAILURE', 'ecdh: unexpected shared secret length');
        return secret;
      } finally {
        try {
          p11.C_DestroyObject(session, derived);
        } catch {
          // a session object dies with its session anyway
        }
      }
    });
  }

  /** AES-256-GCM with the storage key inside the HSM; iv(12) || ciphertext || tag(16). */
  seal(plaintext: Buffer, aad: Buffer): Buffer {
    const pt = requireBuffer(plaintext, 'plaintext', MAX_SEAL_PLAINTEXT);
    const ad = requireBuffer(aad, 'associated data', MAX_AAD);
    // PKCS#11 single-part encryption of nothing is CKR_ARGUMENTS_BAD; nothing to protect anyway
    if (pt.length === 0) throw pksError('PKS_BAD_REQUEST', 'plaintext must not be empty');
    return this.#run('seal', (p11, session) => {
      const h = this.#key(p11, session, 'storage', 'private');
      // random 96-bit IVs from the HSM's RNG; fine far beyond this box's lifetime key count
      const iv = p11.C_GenerateRandom(session, Buffer.alloc(GCM_IV_LEN));
      p11.C_EncryptInit(session, gcm(iv, ad), h);
      const ct = p11.C_Encrypt(session, pt, Buffer.alloc(pt.length + GCM_TAG_LEN));
      if (ct.length !== pt.length + GCM_TAG_LEN) throw pksError('PKS_HSM_FAILURE', 'seal: unexpected ciphertext length');
      return Buffer.concat([iv, ct]);
    });
  }

  /** Inverse of seal; a wrong aad, a tampered blob or a blob from another key: PKS_SEAL_INVALID. */
  open(blob: Buffer, aad: Buffer): Buffer {
    const b = requireBuffer(blob, 'sealed blob', MAX_SEAL_PLAINTEXT + GCM_IV_LEN + GCM_TAG_LEN);
    const ad = requireBuffer(aad, 'associated data', MAX_AAD);
    if (b.length < GCM_IV_LEN + GCM_TAG_LEN) throw pksError('PKS_SEAL_INVALID', 'sealed blob is too short');
    const iv = b.subarray(0, GCM_IV_LEN);
    const body = b.subarray(GCM_IV_LEN);
    return this.#run('open', (p11, session) => {
      const h = this.#key(p11, session, 'storage', 'private');
      p11.C_DecryptInit(session, gcm(Buffer.from(iv), ad), h);
      try {
        return Buffer.from(p11.C_Decrypt(session, Buffer.from(body), Buffer.alloc(body.length)));
      } catch (e) {
        // SoftHSM reports a tag mismatch as CKR_GENERAL_ERROR, others as
        // CKR_ENCRYPTED_DATA_INVALID: anything but a lost session is "does not open"
        if (isSessionLost(e)) throw e;
        throw pksError('PKS_SEAL_INVALID', undefined, e);
      }
    });
  }

  random(n: number): Buffer {
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_RANDOM) {
      throw pksError('PKS_OUT_OF_RANGE', `random length must be 1..${MAX_RANDOM}`);
    }
    return this.#run('random', (p11, session) => p11.C_GenerateRandom(session, Buffer.alloc(n)));
  }

  /**
   * Issue 16 §3: destroys every object on this box's token (keys of every kind, ours by label or
   * not: the token is the box's), then leaves one public data object `pks-zeroized` so that no
   * later start makes a new key hierarchy on it (tryOpen fails closed). Idempotent.
   */
  zeroize(note: string): { destroyed: number } {
    return this.#run('zeroize', (p11, session) => {
      let destroyed = 0;
      for (;;) {
        p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_TOKEN, value: true }]);
        let batch: Handle[];
        try {
          batch = p11.C_FindObjects(session, 64);
        } finally {
          p11.C_FindObjectsFinal(session);
        }
        const doomed = batch.filter((h) => !this.#isMarker(p11, session, h));
        if (doomed.length === 0) break;
        for (const h of doomed) {
          p11.C_DestroyObject(session, h);
          destroyed++;
        }
      }
      this.#handles.clear();
      this.#spki.clear();
      if (!this.#markerOn(p11, session))
        p11.C_CreateObject(session, [
          { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA },
          { type: pkcs11js.CKA_TOKEN, value: true },
          { type: pkcs11js.CKA_PRIVATE, value: false },
          { type: pkcs11js.CKA_LABEL, value: ZEROIZED_LABEL },
          { type: pkcs11js.CKA_VALUE, value: Buffer.from(note.slice(0, 200)) },
        ]);
      return { destroyed };
    });
  }

  /** True when the token carries the zeroize marker. */
  isZeroized(): boolean {
    return this.#run('isZeroized', (p11, session) => this.#markerOn(p11, session));
  }

  #markerOn(p11: P11, session: Handle): boolean {
    return this.#find(p11, session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_DATA }, { type: pkcs11js.CKA_TOKEN, value: true }, { type: pkcs11js.CKA_LABEL, value: ZEROIZED_LABEL }]).length > 0;
  }

  #isMarker(p11: P11, session: Handle, h: Handle): boolean {
    const [cls, label] = p11.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_CLASS }, { type: pkcs11js.CKA_LABEL }]);
    return readUlong(cls!.value) === pkcs11js.CKO_DATA && label!.value.toString() === ZEROIZED_LABEL;
  }

  /** Logs out, closes the session, finalises the module when we were its last user. Idempotent. */
  close(): void {
    const p11 = this.#p11;
    if (!p11) return;
    // login state belongs to the application, not the session: logging out would also log out
    // another Hsm on this module; closing the last session logs out anyway
    if (this.#session && moduleUsers(this.#cfg.module) === 1) {
      try {
        p11.C_Logout(this.#session);
      } catch {
        // not logged in or session gone: either way we are leaving
      }
    }
    this.#dropSession();
    this.#p11 = null;
    this.#slot = null;
    releaseModule(this.#cfg.module);
  }
}

function gcm(iv: Buffer, aad: Buffer): { mechanism: number; parameter: { type: number; iv: Buffer; ivBits: number; aad: Buffer; tagBits: number } } {
  return {
    mechanism: pkcs11js.CKM_AES_GCM,
    // the v2.40 layout (with ulIvBits) is what SoftHSM 2.6 and current vendor modules read
    parameter: { type: pkcs11js.CK_PARAMS_AES_GCM_v240, iv, ivBits: iv.length * 8, aad, tagBits: GCM_TAG_LEN * 8 },
  };
}
