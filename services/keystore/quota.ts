// Quotas that protect the stock, owned by the keystore (it owns the stock) and kept in LMDB in
// the same transaction as the reservation they count, so they survive a restart and cannot be
// refunded by a caller's guess:
//   - open reservations per tester (default 8): RESERVED packages it has not confirmed or
//     failed; a real tester confirms one ECU before it starts the next;
//   - new keys per hour per tester (default 500) and per pool (default 20,000): token buckets on
//     the keystore's monotonic clock. Every key that leaves AVAILABLE counts, a fresh key after a
//     burn included (reserve U, fail U, reserve U costs two); a retry answered with the same
//     package costs nothing;
//   - refunds: none. Quota is taken inside the reservation's transaction, so a reservation that
//     never committed never took any, and one that committed keeps its cost whatever its caller
//     saw (a timed-out call included).
// A tester that holds the cap and spends its hour gets at most cap + hourly quota keys. The
// first refusal of a tester raises one alert (outbox, to the KMS) naming the tester and its
// station; it is raised again only after the tester's bucket has refilled.
import type { Dbs } from './db.js';
import { putOutbox, refuse, type Refusal } from './stock.js';
import { appendAudit } from './audit.js';

export interface QuotaPolicy {
  openPerTester: number;
  testerPerHour: number;
  poolPerHour: number;
}

export const DEFAULT_QUOTAS: Readonly<QuotaPolicy> = Object.freeze({ openPerTester: 8, testerPerHour: 500, poolPerHour: 20_000 });
/** For in-process callers that measure the reservation itself (benchmarks): nothing limited. */
export const NO_QUOTAS: Readonly<QuotaPolicy> = Object.freeze({ openPerTester: Infinity, testerPerHour: Infinity, poolPerHour: Infinity });

export interface QuotaState {
  /** unconfirmed reservations (testers only) */
  open: number;
  tokens: number;
  /** monotonic ms of the last refill */
  at: number;
  /** a drain alert is out for this episode */
  alerted?: boolean;
}

const HOUR = 3_600_000;

function refill(s: QuotaState | undefined, perHour: number, mono: number): QuotaState {
  if (!s) return { open: 0, tokens: perHour, at: mono };
  const dt = Math.max(0, mono - s.at);
  return { ...s, tokens: Math.min(perHour, s.tokens + (dt * perHour) / HOUR), at: Math.max(s.at, mono) };
}

const waitS = (s: QuotaState, perHour: number): number => Math.max(1, Math.ceil(((1 - s.tokens) * HOUR) / perHour / 1000));

export function quotaOf(dbs: Dbs, policy: QuotaPolicy, mono: number, tester: string): QuotaState {
  return refill(dbs.quotas.get(`t:${tester}`), policy.testerPerHour, mono);
}

/**
 * Takes one new key for (tester, pool), or refuses. Call inside the reservation's transaction,
 * after every other check: on success it writes, on a refusal it writes only the drain alert.
 */
export function chargeNewKey(dbs: Dbs, policy: QuotaPolicy, now: number, mono: number, tester: string, station: string, pool: string): Refusal | null {
  const t = refill(dbs.quotas.get(`t:${tester}`), policy.testerPerHour, mono);
  const p = refill(dbs.quotas.get(`p:${pool}`), policy.poolPerHour, mono);
  if (t.alerted && t.tokens >= policy.testerPerHour) delete t.alerted;
  let refusal: Refusal | null = null;
  if (t.open >= policy.openPerTester)
    refusal = refuse('PKS_RESERVATIONS_OPEN', `tester holds ${t.open} unconfirmed reservations (at most ${policy.openPerTester}): confirm or fail one first`);
  else if (t.tokens < 1) refusal = refuse('PKS_QUOTA_EXCEEDED', `new keys per hour over the quota for this tester (${policy.testerPerHour}); retry after ${waitS(t, policy.testerPerHour)} s`);
  else if (p.tokens < 1) refusal = refuse('PKS_QUOTA_EXCEEDED', `new keys per hour over the quota for pool ${pool} (${policy.poolPerHour}); retry after ${waitS(p, policy.poolPerHour)} s`);
  if (refusal) {
    if (!t.alerted) {
      t.alerted = true;
      dbs.quotas.putSync(`t:${tester}`, t);
      appendAudit(dbs, now, { ev: 'quota-drain', tester, station, pool, code: refusal.refused });
      putOutbox(dbs, now, 'alert', {
        kind: 'quota-drain',
        severity: 'critical',
        tester,
        station,
        pool,
        code: refusal.refused,
        message: `tester ${tester} at station ${station} reached its limit (${refusal.detail})`,
      });
    }
    return refusal;
  }
  dbs.quotas.putSync(`t:${tester}`, { ...t, open: t.open + 1, tokens: t.tokens - 1 });
  dbs.quotas.putSync(`p:${pool}`, { ...p, tokens: p.tokens - 1 });
  return null;
}

/** A reservation of this tester was confirmed, failed, burned by the sweep or handed over. */
export function releaseOpen(dbs: Dbs, tester: string | undefined): void {
  if (!tester) return;
  const s = dbs.quotas.get(`t:${tester}`);
  if (s && s.open > 0) dbs.quotas.putSync(`t:${tester}`, { ...s, open: s.open - 1 });
}

/** A reservation handed over to this tester (it did not take a new key). */
export function addOpen(dbs: Dbs, tester: string, mono: number, perHour: number): void {
  const s = refill(dbs.quotas.get(`t:${tester}`), perHour, mono);
  dbs.quotas.putSync(`t:${tester}`, { ...s, open: s.open + 1 });
}
