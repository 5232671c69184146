// Idempotency belongs to one tester. A reservation (pool, ECU UID) answers only the tester
// that holds it: its retry gets the same package (and a fresh time to live); another tester
// gets PKS_RESERVED_BY_OTHER and nothing of the package. An ECU whose key is INJECTED or
// REPORTED never gets M1..M3 again, from anyone: its own tester gets PKS_ALREADY_INJECTED
// naming the package, another tester the same code without it.
// Rework stations take over an ECU from the line through an explicit hand-over (pksctl
// handover, keystore verb 'handover'): the open reservation moves to the named tester, which
// must be registered, not revoked and allowed the pool; the move is audited and reported to
// the KMS, and the new holder's retry gets the package with a fresh time to live.
import { grantRefusal } from './grant.js';
import type { HandoverRequest } from '../../appliance/contracts/keystore.js';
import type { Dbs, KeyRecord } from './db.js';
import { appendAudit } from './audit.js';
import { addOpen, releaseOpen, type QuotaPolicy } from './quota.js';
import { persistMono } from './mono-clock.js';
import { pendingKey, putOutbox, refuse, type Refusal, type ReserveInput } from './stock.js';

/** The answer to a reservation request for an ECU that already has a live record. */
export function priorReservation(dbs: Dbs, mono: number, rec: KeyRecord, r: ReserveInput): { rec: KeyRecord; reused: boolean } | Refusal {
  const mine = rec.tester === r.tester;
  if (rec.state === 'INJECTED' || rec.state === 'REPORTED')
    return refuse('PKS_ALREADY_INJECTED', mine ? `ECU ${r.uid} already holds package ${rec.id} (${rec.state})` : `ECU ${r.uid} is already injected`);
  if (rec.state !== 'RESERVED') return refuse('PKS_STATE_INVALID', `package is ${rec.state}`);
  if (!mine) return refuse('PKS_RESERVED_BY_OTHER', `ECU ${r.uid} has an open reservation of another tester; a rework station needs a hand-over (pksctl handover)`);
  return { rec: extendTtl(dbs, mono, rec), reused: true };
}

/** A retry of a RESERVED package: its age starts again, so a slow rework does not lose it. */
export function extendTtl(dbs: Dbs, mono: number, rec: KeyRecord): KeyRecord {
  if ((rec.pendingAt ?? rec.reservedAt!) >= mono) return rec;
  const next: KeyRecord = { ...rec, pendingAt: mono };
  dbs.pending.removeSync(pendingKey(rec));
  dbs.pending.putSync(pendingKey(next), null);
  dbs.keys.putSync(rec.id, next);
  persistMono(dbs, mono);
  return next;
}

/** The package, or the ECU by pool and UID; the tester it goes to; who ordered it and why. */
export type HandoverInput = HandoverRequest;

export function handoverTx(dbs: Dbs, now: number, mono: number, quotas: QuotaPolicy, h: HandoverInput): KeyRecord | Refusal {
  const id = h.packageId ?? (h.pool && h.uid ? dbs.resv.get(`${h.pool}|${h.uid.toLowerCase()}`) : undefined);
  if (!id) return refuse('PKS_BAD_REQUEST', 'name the package, or the pool and the ECU UID');
  const rec = dbs.keys.get(id);
  if (!rec || rec.state === 'AVAILABLE') return refuse('PKS_NOT_FOUND', 'no such package');
  if (h.pool && rec.pool !== h.pool) return refuse('PKS_NOT_FOUND', 'no such package in that pool');
  if (rec.state !== 'RESERVED') return refuse('PKS_STATE_INVALID', `package is ${rec.state}: only an open reservation can be handed over`);
  const to = dbs.testers.get(h.to);
  const refused = grantRefusal(to, h.to, now, rec.pool);
  // (`!to` is refused above already; said again for the type checker)
  if (refused || !to) return refused ?? refuse('PKS_TESTER_UNKNOWN', h.to);
  if (rec.tester === to.cn) return refuse('PKS_CONFLICT', `tester ${h.to} already holds it`);
  const next: KeyRecord = { ...rec, tester: to.cn, station: to.station, updatedAt: now, pendingAt: mono };
  dbs.pending.removeSync(pendingKey(rec));
  dbs.pending.putSync(pendingKey(next), null);
  persistMono(dbs, mono);
  dbs.keys.putSync(id, next);
  dbs.hist.putSync([to.cn, now, id], null);
  releaseOpen(dbs, rec.tester);
  addOpen(dbs, to.cn, mono, quotas.testerPerHour);
  const seq = appendAudit(dbs, now, { ev: 'handover', id, pool: rec.pool, uid: rec.uid, from: rec.tester, fromStation: rec.station, to: to.cn, toStation: to.station, by: h.by, reason: h.reason });
  putOutbox(dbs, now, 'event', { kind: 'handover', packageId: id, pool: rec.pool, uid: rec.uid, from: rec.tester, to: to.cn, station: to.station, by: h.by, reason: h.reason, auditSeq: seq });
  return next;
}
