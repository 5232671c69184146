// pks-inject's core: one ECU, from its UID to a confirmed key.
//   1. UDS: session, security access, authentication (when the type wants it), read the UID
//   2. box: reserve the package for (pool, UID) over mTLS
//   3. UDS: carry M1-M3 per the type's mapping, read M4/M5
//   4. box: confirm with the proof; the box verifies it in the HSM
// A key that left the box and did not end in a verified proof is reported failed (the box
// burns it, it is never issued again) and the ECU is reworked with a fresh package, up to
// `attempts` times. Steps are timed for the progress line and the bench's breakdown.
import { asPksError, pksError, type PksError } from '../errors.js';
import type { TokenSource } from '../uds/auth.js';
import { UdsClient, type UdsLink } from '../uds/client.js';
import { mappingFor, securityKey, type SheMapping } from '../uds/mapping.js';
import type { BoxApi } from './box.js';

export type Step = 'session' | 'security' | 'authentication' | 'uid' | 'reserve' | 'load' | 'proof' | 'confirm' | 'reset' | 'fail';

export interface EcuResult {
  ok: boolean;
  pool: string;
  uid?: string;
  packageId?: string;
  verified?: boolean;
  attempts: number;
  /** keys reported failed (burned) on the way */
  burned: number;
  /** ms per step, summed over attempts */
  steps: Partial<Record<Step, number>>;
  ms: number;
  error?: { code: string; detail: string };
}

export interface InjectOptions {
  box: BoxApi;
  link: UdsLink;
  pool: string;
  mapping: SheMapping;
  /** SecurityAccess secret per ECU type and level ("<type>/<level>") */
  securitySecret: (type: string, level: number) => Buffer;
  /** 0x29: turns the ECU's challenge into an unlock token */
  token?: TokenSource;
  /** the UID when known (scanned label); otherwise read over UDS */
  uid?: Buffer;
  attempts?: number;
  progress?: (step: Step, detail?: string) => void;
  /** hold the session with TesterPresent when a step takes longer than this (default 2000 ms) */
  keepAliveMs?: number;
}

const hex = (b: Buffer): string => b.toString('hex');

export async function injectEcu(o: InjectOptions): Promise<EcuResult> {
  const t0 = performance.now();
  const type = mappingFor(o.mapping, o.pool);
  const uds = new UdsClient(o.link);
  const steps: Partial<Record<Step, number>> = {};
  const res: EcuResult = { ok: false, pool: o.pool, attempts: 0, burned: 0, steps, ms: 0 };
  const timed = async <T>(step: Step, f: () => Promise<T>): Promise<T> => {
    const s = performance.now();
    o.progress?.(step);
    try {
      return await f();
    } finally {
      steps[step] = (steps[step] ?? 0) + (performance.now() - s);
    }
  };
  // TesterPresent keeps a non-default session alive while we wait on the box
  const keep = setInterval(() => {
    if (!uds.busy) uds.testerPresent(true).catch(() => {});
  }, o.keepAliveMs ?? 2000);
  keep.unref();
  const max = o.attempts ?? 3;
  let last: PksError | undefined;
  try {
    for (let attempt = 1; attempt <= max; attempt++) {
      res.attempts = attempt;
      let pkgId: string | undefined;
      let loadSent = false;
      try {
        await timed('session', () => uds.session(type.session));
        if (type.securityLevel !== undefined) {
          const lvl = type.securityLevel;
          const secret = o.securitySecret(type.type, lvl);
          await timed('security', () => uds.securityAccess(lvl, (seed) => securityKey(type.securityAlgorithm ?? 'aes128-cmac', secret, seed)));
        }
        if (type.authentication === 'unlock-token') {
          if (!o.token) throw pksError('PKS_UDS_MAPPING_INVALID', `ECU type ${type.type} needs an unlock token (0x29) and none is configured`);
          const token = o.token;
          await timed('authentication', () => uds.authenticate(token));
        }
        const uid = o.uid ?? (await timed('uid', () => uds.readDid(type.uidDid)));
        if (uid.length !== 15) throw pksError('PKS_UDS_PROTOCOL', `ECU reported a ${uid.length}-byte UID, SHE UIDs have 15`);
        res.uid = hex(uid);
        const pkg = await timed('reserve', () => o.box.reserve(o.pool, hex(uid)));
        pkgId = pkg.packageId;
        res.packageId = pkgId;
        const m123 = Buffer.concat([Buffer.from(pkg.m1, 'hex'), Buffer.from(pkg.m2, 'hex'), Buffer.from(pkg.m3, 'hex')]);
        if (m123.length !== 64) throw pksError('PKS_SHE_INVALID', 'the box answered a package of the wrong size');
        loadSent = true;
        let proof: Buffer;
        if (type.load.via === 'routine') {
          const rid = type.load.routineId;
          proof = await timed('load', () => uds.routine(rid, m123));
        } else {
          const { writeDid, readDid } = type.load;
          await timed('load', () => uds.writeDid(writeDid, m123));
          proof = await timed('proof', () => uds.readDid(readDid));
        }
        if (proof.length !== 48) throw pksError('PKS_UDS_PROTOCOL', `ECU proof has ${proof.length} bytes, M4|M5 has 48`);
        let confirmed: { state: string; verified: boolean } | undefined;
        try {
          confirmed = await timed('confirm', () => o.box.confirm(pkgId!, proof.subarray(0, 32), proof.subarray(32)));
        } catch (e) {
          const pe = asPksError(e);
          // the box burned it (proof mismatch): rework with a fresh key, nothing more to report
          if (pe.code === 'PKS_SHE_PROOF_MISMATCH') {
            res.burned++;
            pkgId = undefined;
          }
          throw pe;
        }
        res.verified = confirmed.verified;
        // RELAYED: the issuing box was gone; its proof went to the KMS through another box (cluster.ts)
        res.ok = confirmed.state === 'INJECTED' || confirmed.state === 'REPORTED' || confirmed.state === 'RELAYED';
        if (!res.ok) throw pksError('PKS_STATE_INVALID', `box answered state ${confirmed.state}`);
        if (type.reset !== undefined) {
          const r = type.reset;
          await timed('reset', () => uds.ecuReset(r)).catch(() => {}); // the key is in; a lost reset answer changes nothing
        }
        return res;
      } catch (e) {
        last = asPksError(e);
        o.progress?.('fail', `${last.code}: ${last.detail}`);
        if (pkgId) {
          // the key left the box and is not confirmed: report it so the box burns it
          const id = pkgId;
          await timed('fail', () => o.box.fail(id, `${loadSent ? 'load' : 'before load'}: ${last!.code}`))
            .then(() => res.burned++)
            .catch(() => {});
        }
        // not worth a rework: the box refuses us, or the mapping is wrong
        if (['PKS_POOL_FORBIDDEN', 'PKS_POOL_UNKNOWN', 'PKS_TESTER_UNKNOWN', 'PKS_TESTER_EXPIRED', 'PKS_UDS_MAPPING_INVALID', 'PKS_AUTH_REQUIRED'].includes(last.code)) break;
        if (last.code === 'PKS_DOIP_CLOSED') break; // the link is gone; the caller reconnects
        await new Promise((r) => setTimeout(r, 50 * attempt));
      }
    }
    res.error = { code: last?.code ?? 'PKS_INTERNAL', detail: last?.detail ?? 'failed' };
    return res;
  } finally {
    clearInterval(keep);
    res.ms = performance.now() - t0;
  }
}
