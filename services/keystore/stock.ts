// Key state changes, each one LMDB transaction together with its counters, indexes, audit
// entry and outbox item. These functions run inside a write transaction and never throw
// half-way: every check comes before the first write, and a refusal is returned, not thrown,
// so a refused request in a batched commit cannot roll back its neighbours.
import type { ErrorCode } from '../../appliance/errors.js';
import { appendAudit } from './audit.js';
import type { KeyState } from '../../appliance/contracts/keystore.js';
import { ZERO, type Counters, type Dbs, type KeyRecord } from './db.js';
import { nextCounter, useCounter } from './counters.js';
import { NO_QUOTAS, chargeNewKey, releaseOpen, type QuotaPolicy } from './quota.js';
import { priorReservation } from './handover.js';
import { persistMono } from './mono-clock.js';
import { markReported, noteAck } from './compaction.js';
import { nextOutboxId } from './outbox.js';

export type Refusal = { refused: ErrorCode; detail: string };
export const refuse = (refused: ErrorCode, detail: string): Refusal => ({ refused, detail });
export const isRefusal = (x: unknown): x is Refusal => typeof x === 'object' && x !== null && 'refused' in x;

export const FIELD: Record<KeyState, keyof Counters> = {
  AVAILABLE: 'available',
  RESERVED: 'reserved',
  INJECTED: 'injected',
  REPORTED: 'reported',
  BURNED: 'burned',
};

export function counters(dbs: Dbs, pool: string): Counters {
  return dbs.counters.get(pool) ?? { ...ZERO };
}

function move(dbs: Dbs, pool: string, from: KeyState | null, to: KeyState, n = 1): void {
  const c = { ...counters(dbs, pool) };
  if (from) c[FIELD[from]] -= n;
  c[FIELD[to]] += n;
  dbs.counters.putSync(pool, c);
}

export { nextOutboxId } from './outbox.js';

export function putOutbox(dbs: Dbs, now: number, kind: string, body: Record<string, unknown>): string {
  const id = nextOutboxId(dbs);
  dbs.outbox.putSync(id, { kind, at: new Date(now).toISOString(), body });
  return id;
}

/** Adds freshly imported records as AVAILABLE; ids already known are skipped, never overwritten. */
export function addAvailable(dbs: Dbs, pool: string, batchId: string, records: ReadonlyArray<readonly [string, Buffer]>): number {
  let seq = (dbs.meta.get('avail-seq') as number | undefined) ?? 0;
  let added = 0;
  for (const [id, ct] of records) {
    // a record id seen before (in any state) is never written again: a re-sent or forged
    // batch must not resurrect a key that already left the box
    if (dbs.keys.doesExist(id)) continue;
    seq++;
    dbs.keys.putSync(id, { id, pool, batchId, state: 'AVAILABLE', ct });
    dbs.avail.putSync([pool, seq], id);
    added++;
  }
  dbs.meta.putSync('avail-seq', seq);
  if (added) move(dbs, pool, null, 'AVAILABLE', added);
  return added;
}

export interface ReserveInput {
  pool: string;
  uid: string;
  tester: string;
  station: string;
}

/** What a reservation needs besides the wall clock: the monotonic keystore time and the quotas. */
export interface IssueContext {
  mono: number;
  quotas: QuotaPolicy;
  /** asked inside the transaction before a key leaves the stock (the update's drain); a retry of an open reservation does not ask */
  newKey?: () => Refusal | null;
}

export const pendingKey = (rec: KeyRecord): [number, string] => [rec.pendingAt ?? rec.reservedAt!, rec.id];

export function reserveTx(dbs: Dbs, now: number, r: ReserveInput, ctx: IssueContext = { mono: now, quotas: NO_QUOTAS }): { rec: KeyRecord; reused: boolean } | Refusal {
  if (!dbs.pools.doesExist(r.pool)) return refuse('PKS_POOL_UNKNOWN', r.pool);
  // UID 0 is SHE's wildcard: a package from this box is always for one individual ECU
  if (/^0+$/.test(r.uid)) return refuse('PKS_SHE_INVALID', 'uid 0 (wildcard) is not an ECU');
  const resvKey = `${r.pool}|${r.uid}`;
  const prior = dbs.resv.get(resvKey);
  if (prior) {
    const rec = dbs.keys.get(prior);
    // idempotent for its own tester only (handover.ts): a retry, a conflict or "already injected"
    if (rec && rec.state !== 'BURNED') return priorReservation(dbs, ctx.mono, rec, r);
    // the key for this ECU was burned (failed injection): a fresh key, the burned one never again
  }
  const gate = ctx.newKey?.();
  if (gate) return gate;
  let id: string | undefined;
  let availKey: [string, number] | undefined;
  for (const { key, value } of dbs.avail.getRange({ start: [r.pool, 0], end: [r.pool, Number.MAX_SAFE_INTEGER], limit: 1 })) {
    availKey = key;
    id = value;
  }
  if (!id || !availKey) return refuse('PKS_POOL_EMPTY', r.pool);
  const rec = dbs.keys.get(id);
  if (!rec || rec.state !== 'AVAILABLE') return refuse('PKS_STORE_FAILURE', `queue entry ${id} is not available`);
  const batch = dbs.batches.get(rec.batchId);
  if (!batch) return refuse('PKS_STORE_FAILURE', `batch of ${id} is missing`);
  const counter = nextCounter(dbs, r.uid, batch.she.keyId, batch.she.counter);
  if (isRefusal(counter)) return counter;
  const over = chargeNewKey(dbs, ctx.quotas, now, ctx.mono, r.tester, r.station, r.pool);
  if (over) return over;
  useCounter(dbs, r.uid, batch.she.keyId, counter);
  const next: KeyRecord = { ...rec, state: 'RESERVED', uid: r.uid, tester: r.tester, station: r.station, reservedAt: now, updatedAt: now, counter, pendingAt: ctx.mono };
  dbs.avail.removeSync(availKey);
  dbs.keys.putSync(id, next);
  dbs.resv.putSync(resvKey, id);
  dbs.hist.putSync([r.tester, now, id], null);
  dbs.pending.putSync(pendingKey(next), null);
  persistMono(dbs, ctx.mono);
  move(dbs, r.pool, 'AVAILABLE', 'RESERVED');
  appendAudit(dbs, now, { ev: 'reserve', id, pool: r.pool, uid: r.uid, tester: r.tester, station: r.station, counter });
  return { rec: next, reused: false };
}

function ownedReservation(dbs: Dbs, packageId: string, tester: string): KeyRecord | Refusal {
  const rec = dbs.keys.get(packageId);
  // a package another tester holds is reported as unknown: no oracle for guessing ids
  if (!rec || rec.state === 'AVAILABLE' || rec.tester !== tester) return refuse('PKS_NOT_FOUND', 'no such package for this tester');
  return rec;
}

export interface Proof {
  m4: string;
  m5: string;
}

/** Records the vault's verdict on the ECU's proof: INJECTED, or BURNED on a mismatch. */
export function confirmTx(dbs: Dbs, now: number, packageId: string, tester: string, verified: boolean, proof: Proof): KeyRecord | Refusal {
  const rec = ownedReservation(dbs, packageId, tester);
  if (isRefusal(rec)) return rec;
  if (rec.state === 'INJECTED' || rec.state === 'REPORTED') return verified ? rec : refuse('PKS_STATE_INVALID', `package is ${rec.state}`);
  if (rec.state !== 'RESERVED') return refuse('PKS_STATE_INVALID', `package is ${rec.state}`);
  const state: KeyState = verified ? 'INJECTED' : 'BURNED';
  const next: KeyRecord = { ...rec, state, updatedAt: now, ...(verified ? {} : { reason: 'proof mismatch' }) };
  dbs.keys.putSync(rec.id, next);
  dbs.pending.removeSync(pendingKey(rec));
  releaseOpen(dbs, rec.tester);
  move(dbs, rec.pool, 'RESERVED', state);
  const seq = appendAudit(dbs, now, { ev: verified ? 'inject' : 'burn', id: rec.id, pool: rec.pool, uid: rec.uid, tester, m4: proof.m4, m5: proof.m5, ...(verified ? {} : { reason: 'proof mismatch' }) });
  const body = { packageId: rec.id, recordId: rec.id, batchId: rec.batchId, pool: rec.pool, uid: rec.uid, tester, station: rec.station, m4: proof.m4, m5: proof.m5, counter: rec.counter, auditSeq: seq, reservedAt: new Date(rec.reservedAt!).toISOString() };
  putOutbox(dbs, now, verified ? 'injection' : 'burn', verified ? body : { ...body, reason: 'proof mismatch' });
  if (!verified) putOutbox(dbs, now, 'alert', { kind: 'proof-mismatch', severity: 'critical', pool: rec.pool, uid: rec.uid, tester, packageId: rec.id });
  return next;
}

/** A failed or abandoned injection: the key is burned and reported, never issued again. */
export function burnTx(dbs: Dbs, now: number, packageId: string, tester: string | null, reason: string): KeyRecord | Refusal {
  const rec = tester === null ? dbs.keys.get(packageId) : ownedReservation(dbs, packageId, tester);
  if (!rec) return refuse('PKS_NOT_FOUND', 'no such package');
  if (isRefusal(rec)) return rec;
  if (rec.state === 'BURNED') return rec;
  if (rec.state !== 'RESERVED') return refuse('PKS_STATE_INVALID', `package is ${rec.state}`);
  const next: KeyRecord = { ...rec, state: 'BURNED', reason, updatedAt: now };
  dbs.keys.putSync(rec.id, next);
  dbs.pending.removeSync(pendingKey(rec));
  releaseOpen(dbs, rec.tester);
  move(dbs, rec.pool, 'RESERVED', 'BURNED');
  const seq = appendAudit(dbs, now, { ev: 'burn', id: rec.id, pool: rec.pool, uid: rec.uid, tester: rec.tester, reason });
  putOutbox(dbs, now, 'burn', { packageId: rec.id, recordId: rec.id, batchId: rec.batchId, pool: rec.pool, uid: rec.uid, tester: rec.tester, station: rec.station, counter: rec.counter, reason, auditSeq: seq });
  return next;
}

/** The KMS acknowledged these outbox items: delete them; acknowledged injections become REPORTED. */
export function ackTx(dbs: Dbs, now: number, ids: readonly string[]): { acked: number; reported: number } {
  let acked = 0;
  let reported = 0;
  for (const id of ids) {
    const item = dbs.outbox.get(id);
    if (!item) continue;
    if (item.kind === 'injection') {
      const pid = item.body.packageId as string;
      const rec = dbs.keys.get(pid);
      if (rec && rec.state === 'INJECTED') {
        move(dbs, rec.pool, 'INJECTED', 'REPORTED');
        const reportSeq = appendAudit(dbs, now, { ev: 'report', id: pid, pool: rec.pool, uid: rec.uid });
        dbs.keys.putSync(pid, { ...rec, state: 'REPORTED', updatedAt: now, reportSeq });
        markReported(dbs, reportSeq, pid);
        reported++;
      }
    }
    noteAck(dbs, item);
    dbs.outbox.removeSync(id);
    acked++;
  }
  return { acked, reported };
}
