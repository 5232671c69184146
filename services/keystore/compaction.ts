// Compaction: a store that lasts years. A REPORTED record (the KMS acknowledged its injection)
// whose 'report' audit entry is covered by an audit checkpoint the KMS has acknowledged keeps
// only what the audit and the KMS may still ask about: record id, pool, batch, state, ECU UID,
// tester, SHE counter, times and the report's audit seq. The key's ciphertext and the station
// go: the key is in its ECU, the OEM has the proof, and a record id is never imported again
// (addAvailable skips known ids, compacted ones included). The reservation index (pool, UID)
// and the SHE counter table are kept: they answer "already injected" and choose the next
// counter for a rework.
//
// The condition, until the KMS-acknowledged checkpoint anchor of the audit lands (b1-vault,
// issue 9): the highest auditSeq of a 'checkpoint' outbox item the KMS acknowledged (the ack is
// the KMS's, after it checked the checkpoint extends the last one). `ackedAuditSeq` is the one
// hook: when the anchor exists, read it there.
import type { Dbs, KeyRecord } from './db.js';

const ANCHOR = 'kms-acked-audit-seq';

/** The audit seq up to which the KMS has acknowledged a signed checkpoint (0: none yet). */
export function ackedAuditSeq(dbs: Dbs): number {
  return (dbs.meta.get(ANCHOR) as number | undefined) ?? 0;
}

/** ackTx hook: an acknowledged checkpoint moves the anchor forward. */
export function noteAck(dbs: Dbs, item: { kind: string; body: Record<string, unknown> }): void {
  if (item.kind !== 'checkpoint') return;
  const seq = item.body.auditSeq;
  if (typeof seq === 'number' && Number.isSafeInteger(seq) && seq > ackedAuditSeq(dbs)) dbs.meta.putSync(ANCHOR, seq);
}

/** ackTx hook: a record became REPORTED with its 'report' entry at `seq`. */
export function markReported(dbs: Dbs, seq: number, id: string): void {
  dbs.compactable.putSync([seq, id], null);
}

/** What is kept of a compacted record. */
export function compacted(rec: KeyRecord): KeyRecord {
  const { id, pool, batchId, state, uid, tester, reservedAt, updatedAt, counter, reportSeq, late } = rec;
  const kept = { id, pool, batchId, state, ct: Buffer.alloc(0), uid, tester, reservedAt, updatedAt, counter, reportSeq, late, compacted: true };
  return Object.fromEntries(Object.entries(kept).filter(([, v]) => v !== undefined)) as unknown as KeyRecord;
}

/** Compacts up to `limit` records; inside a write transaction. Returns how many. */
export function compactTx(dbs: Dbs, limit: number): number {
  const upTo = ackedAuditSeq(dbs);
  if (!upTo) return 0;
  let n = 0;
  for (const { key } of dbs.compactable.getRange({ start: [0, ''], end: [upTo, '\uffff'], limit })) {
    const rec = dbs.keys.get(key[1]);
    if (rec && rec.state === 'REPORTED' && !rec.compacted) {
      dbs.keys.putSync(rec.id, compacted(rec));
      n++;
    }
    dbs.compactable.removeSync(key);
  }
  return n;
}
