// Retries never lose a proof. A package the sweep burned as abandoned may still be in its ECU
// (the tester lost the link, came back after the TTL): a valid M4/M5 for it is the ECU's word
// that it holds the key. It is recorded, never silently refused: the record becomes INJECTED
// (marked late), the audit says so and the KMS gets the injection record (late: true) after the
// burn record it already has. An invalid proof for a burned package changes nothing.
import type { Dbs, KeyRecord } from './db.js';
import { appendAudit } from './audit.js';
import { counters, putOutbox, refuse, type Proof, type Refusal } from './stock.js';

export const isLateCandidate = (rec: KeyRecord): boolean => rec.state === 'BURNED' && rec.reason === 'abandoned';

export function lateProofTx(dbs: Dbs, now: number, packageId: string, tester: string, proof: Proof): KeyRecord | Refusal {
  const rec = dbs.keys.get(packageId);
  if (!rec || rec.tester !== tester) return refuse('PKS_NOT_FOUND', 'no such package for this tester');
  if (rec.state === 'INJECTED' && rec.late) return rec;
  if (!isLateCandidate(rec)) return refuse('PKS_STATE_INVALID', `package is ${rec.state}`);
  const next: KeyRecord = { ...rec, state: 'INJECTED', late: true, updatedAt: now };
  delete next.reason;
  dbs.keys.putSync(rec.id, next);
  const c = { ...counters(dbs, rec.pool) };
  c.burned -= 1;
  c.injected += 1;
  dbs.counters.putSync(rec.pool, c);
  const seq = appendAudit(dbs, now, { ev: 'inject-late', id: rec.id, pool: rec.pool, uid: rec.uid, tester, m4: proof.m4, m5: proof.m5, burnedAs: 'abandoned' });
  putOutbox(dbs, now, 'injection', {
    packageId: rec.id, recordId: rec.id, batchId: rec.batchId, pool: rec.pool, uid: rec.uid, tester, station: rec.station,
    m4: proof.m4, m5: proof.m5, counter: rec.counter, auditSeq: seq, reservedAt: new Date(rec.reservedAt!).toISOString(), late: true,
  });
  putOutbox(dbs, now, 'alert', { kind: 'late-proof', severity: 'warning', pool: rec.pool, uid: rec.uid, tester, packageId: rec.id, message: `ECU ${rec.uid} holds package ${rec.id}, which was burned as abandoned` });
  return next;
}
