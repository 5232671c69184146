// The vault's operations: the only code that holds the HSM session or sees clear key bytes.
// Every operation fails closed with the HSM's coded error while the HSM is unavailable; the
// holder re-opens it by itself when the cause is gone (except a wrong PIN: retrying a wrong
// PIN would lock a real HSM, so that one waits for a restart with a corrected credential).
import { createHash } from 'node:crypto';
import { aeadOpen, authAad, batchKeyAad, deriveBatchKey, recordAad } from '../../appliance/batch-crypto.js';
import { PksError, asPksError, pksError } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { sheMessages, sheVerify, type SheUpdate } from '../../appliance/she.js';
import type { CheckpointFields } from '../../appliance/signed-messages.js';
import { newSerial } from '../../appliance/x509.js';
import { Hsm, type HsmConfig, type KeyName } from './hsm.js';
import { signGateRecord, type GateRecord, type TreeDigest } from './gate.js';
import { EcuCa, boxCsrToSign, checkpointToSign, verificationFileToSign, type EcuCaConfig, type IssuedCertificate } from './signed-structures.js';

export type SignKey = 'identity' | 'audit' | 'ecu-ca' | `unlock-${string}`;
export type PublicKeyName = 'identity' | 'transport' | 'audit' | 'ecu-ca' | `unlock-${string}`;

export interface SheRequest {
  batchId: string;
  pool: string;
  recordId: string;
  /** batch key wrapped by the storage key (from openBatch) */
  batchKey: Buffer;
  /** the record's ciphertext under the batch key: the new key */
  record: Buffer;
  /** the pool's auth key ciphertext under the batch key */
  auth: Buffer;
  uid: Buffer;
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
}

const RETRY_MS = 5_000;
const CACHE_MAX = 256;

export class Vault {
  private hsm: Hsm | null = null;
  private failure: PksError | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  /** unwrapped batch keys, keyed by a hash of their wrapped form; zeroized on eviction */
  private batchKeys = new Map<string, Buffer>();
  private readonly ecuCa: EcuCa | null;
  /** issue 12: the application gate, asked before every key operation (vault-gate.ts) */
  private guard: () => void = () => undefined;
  private gateStatus: () => Record<string, unknown> | undefined = () => undefined;
  /** the key hierarchy (the identity key with it) was created by this process: first start after setup */
  hierarchyCreated = false;

  constructor(
    private readonly cfg: HsmConfig,
    private readonly boxId: string,
    private readonly log: Logger,
    ecuCa?: EcuCaConfig,
  ) {
    this.ecuCa = ecuCa ? new EcuCa(ecuCa, () => this.publicKey('ecu-ca'), async (tbs) => this.sign('ecu-ca', tbs)) : null;
  }

  /** Opens the HSM and ensures the key hierarchy; never throws: the failure is kept and reported. */
  start(): void {
    this.tryOpen();
  }

  private tryOpen(): void {
    try {
      const hsm = Hsm.open(this.cfg);
      // a zeroized token (issue 16 §3) never gets a new hierarchy: decommissioned boxes stay dead
      if (hsm.isZeroized()) {
        hsm.close();
        throw pksError('PKS_DECOMMISSIONED', 'the HSM token was zeroized; set the box up again to use it');
      }
      const { created } = hsm.ensureHierarchy();
      hsm.checkHierarchy();
      if (created.length) this.log.info('key hierarchy created', { created });
      if (created.includes('identity')) this.hierarchyCreated = true;
      this.hsm = hsm;
      if (this.failure) this.log.info('HSM available again');
      this.failure = null;
    } catch (err) {
      const e = asPksError(err);
      if (!this.failure || this.failure.code !== e.code) this.log.error('HSM unavailable, failing closed', { code: e.code, detail: e.detail });
      this.failure = e;
      this.hsm = null;
      this.scheduleRetry();
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.failure?.code === 'PKS_HSM_LOGIN' || this.failure?.code === 'PKS_DECOMMISSIONED') return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.tryOpen();
    }, RETRY_MS);
    this.retryTimer.unref();
  }

  /** The HSM, or the coded reason it is not there. */
  private use<T>(fn: (hsm: Hsm) => T): T {
    if (!this.hsm) throw this.failure ?? pksError('PKS_HSM_FAILURE', 'not started');
    try {
      return fn(this.hsm);
    } catch (err) {
      const e = asPksError(err);
      if (['PKS_HSM_FAILURE', 'PKS_HSM_TOKEN', 'PKS_HSM_MODULE', 'PKS_HSM_KEY_MISSING'].includes(e.code)) {
        // the session or the token went away: drop it, fail closed, re-open in the background
        this.log.error('HSM operation failed, failing closed', { code: e.code, detail: e.detail });
        this.drop(e);
      }
      throw e;
    }
  }

  private drop(e: PksError): void {
    try {
      this.hsm?.close();
    } catch {
      /* already gone */
    }
    this.hsm = null;
    this.failure = e;
    this.clearCache();
    this.scheduleRetry();
  }

  get ready(): boolean {
    return this.hsm !== null;
  }

  /** Issue 16 §3: destroys the HSM keys of this box (only when asked for this box by name). */
  zeroize(boxId: string): { destroyed: number; zeroized: true } {
    if (boxId !== this.boxId) throw pksError('PKS_BAD_REQUEST', `this vault belongs to ${this.boxId}, not ${boxId}`);
    let hsm = this.hsm;
    let own = false;
    if (!hsm) {
      // a re-run after a kill: the token may be zeroized already, or the vault failed closed
      hsm = Hsm.open(this.cfg);
      own = true;
    }
    try {
      const r = hsm.zeroize(`zeroized ${boxId} ${new Date().toISOString()}`);
      this.log.warn('HSM keys destroyed (zeroize)', { destroyed: r.destroyed });
      return { ...r, zeroized: true };
    } finally {
      this.clearCache();
      if (own) hsm.close();
      else this.drop(pksError('PKS_DECOMMISSIONED', 'the HSM keys were destroyed (zeroize)'));
    }
  }

  /** `ready`: the HSM is open; `gate` (when there is one): whether key operations are served. */
  status(): Record<string, unknown> {
    const gate = this.gateStatus();
    const g = gate ? { gate } : {};
    if (!this.hsm) return { ready: false, boxId: this.boxId, error: this.failure?.code ?? 'PKS_HSM_FAILURE', detail: this.failure?.detail ?? '', ...g };
    try {
      this.hsm.ping();
      return { ready: true, boxId: this.boxId, hsm: this.hsm.status(), ...g };
    } catch (err) {
      const e = asPksError(err);
      this.drop(e);
      return { ready: false, boxId: this.boxId, error: e.code, detail: e.detail, ...g };
    }
  }

  publicKey(name: PublicKeyName): Buffer {
    return this.use((h) => h.publicKey(name));
  }

  /** Every key operation (sign, ECDH, unwrap, SHE) asks `guard` first; public keys and status stay open. */
  setGuard(guard: () => void, status: () => Record<string, unknown>): void {
    this.guard = guard;
    this.gateStatus = status;
  }

  // raw signing stays inside the vault: every caller asks for a typed structure below
  private sign(name: SignKey, data: Buffer): Buffer {
    this.guard();
    return this.use((h) => h.sign(name, data));
  }

  /**
   * The gate's provisioning record over a measurement, signed with the identity key (gate.ts
   * builds the text, domain-separated `pks-gate-v1|`). Not behind the guard: the gate is
   * closed exactly when a record has to be made.
   */
  signGateRecord(pcr15: string, trees: readonly TreeDigest[], at = new Date(), release?: string): GateRecord {
    return signGateRecord(pcr15, trees, at, (d) => this.use((h) => h.sign('identity', d)), release);
  }

  /** The identity key's signature over a gate report this process built (vault-gate.ts). */
  signGateReport(built: Buffer): Buffer {
    return this.use((h) => h.sign('identity', built));
  }

  /**
   * The unlock keys sign only what services/vault/unlock-verbs.ts builds inside this process
   * from validated fields (a token, a user certificate): never bytes a caller sent.
   */
  signUnlockStructure(name: `unlock-${string}`, built: Buffer): Buffer {
    return this.sign(name, built);
  }

  /** An audit checkpoint from its fields (the keystore's verb). */
  signCheckpoint(c: CheckpointFields): Buffer {
    return this.sign('audit', checkpointToSign(c));
  }

  /** A verification file of this box, as the keystore packed it. */
  signVerificationFile(payloadText: string): Buffer {
    return this.sign('audit', verificationFileToSign(payloadText, this.boxId));
  }

  /** The identity key's endorsement of the box's own rotate-cert CSR. */
  async endorseBoxCsr(csrPem: string): Promise<Buffer> {
    return this.sign('identity', await boxCsrToSign(csrPem, this.boxId));
  }

  private issuer(): EcuCa {
    if (!this.ecuCa) throw pksError('PKS_NOT_FOUND', 'this box issues no ECU certificates');
    return this.ecuCa;
  }

  /** An ECU certificate from (UID, public key, profile), built here from the profile. */
  issueEcuCertificate(r: { uid: string; spki: Buffer; profile: string; serial: string }): Promise<IssuedCertificate> {
    return this.issuer().issue(r);
  }

  /** The development ECU CA certificate, self-signed over the HSM key. */
  ecuCaCertificate(days: number): Promise<string> {
    return this.issuer().selfSigned(newSerial(), days);
  }

  /** ECDH with the transport key → batch key, returned only wrapped by the storage key. */
  openBatch(epk: Buffer, batchId: string): Buffer {
    this.guard();
    return this.use((h) => {
      const shared = h.ecdh(epk);
      const key = deriveBatchKey(shared, batchId, this.boxId);
      shared.fill(0);
      try {
        return h.seal(key, batchKeyAad(batchId));
      } finally {
        key.fill(0);
      }
    });
  }

  private batchKey(batchId: string, wrapped: Buffer): Buffer {
    const id = createHash('sha256').update(batchId).update('\0').update(wrapped).digest('base64');
    const hit = this.batchKeys.get(id);
    if (hit) {
      this.batchKeys.delete(id);
      this.batchKeys.set(id, hit);
      return hit;
    }
    const key = this.use((h) => h.open(wrapped, batchKeyAad(batchId)));
    if (key.length !== 32) throw pksError('PKS_SEAL_INVALID', 'batch key has the wrong length');
    this.batchKeys.set(id, key);
    if (this.batchKeys.size > CACHE_MAX) {
      const [oldId, old] = this.batchKeys.entries().next().value as [string, Buffer];
      old.fill(0);
      this.batchKeys.delete(oldId);
    }
    return key;
  }

  private clearCache(): void {
    for (const k of this.batchKeys.values()) k.fill(0);
    this.batchKeys.clear();
  }

  /** Runs fn with the clear SHE update inside this process only, then wipes the key bytes. */
  private withUpdate<T>(r: SheRequest, fn: (u: SheUpdate) => T): T {
    this.guard();
    if (!this.hsm) throw this.failure ?? pksError('PKS_HSM_FAILURE', 'not started');
    const key = this.batchKey(r.batchId, r.batchKey);
    const newKey = aeadOpen(key, r.record, recordAad(r.batchId, r.recordId));
    const authKey = aeadOpen(key, r.auth, authAad(r.batchId, r.pool));
    try {
      if (newKey.length !== 16 || authKey.length !== 16) throw pksError('PKS_SEAL_INVALID', 'SHE key record has the wrong length');
      return fn({ uid: r.uid, keyId: r.keyId, authKeyId: r.authKeyId, authKey, newKey, counter: r.counter, flags: r.flags });
    } finally {
      newKey.fill(0);
      authKey.fill(0);
    }
  }

  shePrepare(r: SheRequest): { m1: Buffer; m2: Buffer; m3: Buffer } {
    return this.withUpdate(r, (u) => {
      const m = sheMessages(u);
      return { m1: m.m1, m2: m.m2, m3: m.m3 };
    });
  }

  sheVerify(r: SheRequest, m4: Buffer, m5: Buffer): boolean {
    return this.withUpdate(r, (u) => sheVerify(u, m4, m5));
  }

  stop(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.clearCache();
    try {
      this.hsm?.close();
    } catch {
      /* closing anyway */
    }
    this.hsm = null;
  }
}

export type { KeyName };
