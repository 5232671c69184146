// Takes in one verification file from a box: the audit-key signature over the whole file
// first (a forged file is refused whole and nothing is recorded), then every item:
//   injection  the key was sent to this box in that batch, the ECU's M4/M5 prove that exactly
//              this key went into the ECU with that UID (sheVerify with the key and auth key
//              held here), and the key was never reported for another ECU;
//   burn       the key was this box's; it is recorded as burned (never reissued anyway);
//   checkpoint each audit checkpoint extends the previous one (seq + 1, prev = last head);
//   alert, event, cert: kept in the box's fleet record.
// Items that fail are recorded as REJECTED with a reason and still acknowledged (the box must
// not resend a bad record forever); the ack lists them, and the box raises an alert.
// Everything is written in one synchronous transaction before the ack goes out; a file seen
// before (same fileId) gets the same answer again.
import { createPublicKey } from 'node:crypto';
import { pksError } from '../../appliance/errors.js';
import { sheVerify } from '../../appliance/she.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';
import { verifyFile } from '../../appliance/verification-file.js';
import { parseRecordId } from './batches.js';
import { takeUnlock } from './unlock.js';
import { pushCapped, type BatchRecord, type BoxRecord, type FileRecord, type InjectionRecord, type KmsStore } from './store.js';
import { asReject, claimSlot, plantOf, reject, takeRelease, type Release } from './cluster.js';

export interface FileResult extends FileRecord {
  fileId: string;
  duplicate: boolean;
  /** issue 16 §3: certificate events of this file (rotated, zeroize begun), for revocation */
  certEvents?: Array<Record<string, unknown>>;
}
// (FileRecord.releases: issue 16 §2, what a rebalancing release asks the KMS to send on)

const HEX = (n: number) => new RegExp(`^[0-9a-fA-F]{${n * 2}}$`);
const isHex = (v: unknown, n: number): v is string => typeof v === 'string' && HEX(n).test(v);
const HASH = /^[0-9a-fA-F]{32,128}$/;

export function takeFile(store: KmsStore, boxId: string, raw: Buffer | string, now = new Date()): FileResult {
  const box = store.boxes.get(boxId);
  if (!box) throw pksError('PKS_NOT_FOUND', `box ${boxId} is not registered`);
  const auditKey = createPublicKey({ key: Buffer.from(box.audit, 'base64'), format: 'der', type: 'spki' });
  const file = verifyFile(raw, auditKey);
  if (file.boxId !== boxId) throw pksError('PKS_AUDIT_BROKEN', `file names box ${file.boxId}`);
  return store.root.transactionSync(() => {
    const seen = store.files.get([boxId, file.fileId]);
    if (seen) return { fileId: file.fileId, duplicate: true, ...seen };
    const b = store.boxes.get(boxId)!;
    const result: FileRecord = { ids: [], rejected: [], anchors: [] };
    const releases: Release[] = [];
    const certEvents = file.items.filter((i) => i.kind === 'event' && (i.body.type === 'mqtt-cert-rotated' || i.body.type === 'zeroize-begin')).map((i) => i.body);
    for (const item of file.items) {
      try {
        const cp = takeItem(store, b, file.fileId, item, now, releases);
        if (cp) result.anchors!.push(cp);
      } catch (e) {
        const r = asReject(e);
        result.rejected.push({ id: item.id, code: r.code, detail: r.detail.slice(0, 200) });
        b.counters.rejected++;
        pushCapped(b.alerts, { code: r.code, detail: `item ${item.id}: ${r.detail}`.slice(0, 300), at: now.toISOString(), source: 'kms' });
      }
      result.ids.push(item.id);
    }
    if (releases.length) result.releases = releases;
    b.counters.files++;
    b.lastSeen = now.toISOString();
    store.boxes.putSync(boxId, b);
    store.files.putSync([boxId, file.fileId], result);
    return { fileId: file.fileId, duplicate: false, ...result, certEvents };
  });
}

function ownedRecord(store: KmsStore, b: BoxRecord, body: Record<string, unknown>) {
  const { batchId, recordId, pool } = body;
  if (typeof batchId !== 'string' || typeof recordId !== 'string' || typeof pool !== 'string') reject('PKS_BAD_REQUEST', 'batchId, recordId and pool are required');
  const batch = store.batches.get(batchId as string);
  const rid = parseRecordId(recordId as string);
  if (!batch || batch.boxId !== b.boxId) return reject('PKS_BATCH_NOT_FOR_US', `batch ${String(batchId)} was not sent to ${b.boxId}`);
  if (!rid || rid.pool !== batch.pool || pool !== batch.pool || rid.index < batch.from || rid.index >= batch.from + batch.count)
    return reject('PKS_BATCH_INVALID', `record ${String(recordId)} is not in batch ${batch.batchId}`);
  return { batch, index: rid.index, recordId: recordId as string };
}

/** Takes one item; a checkpoint answers what the KMS will anchor (when it names its audit entry). */
function takeItem(store: KmsStore, b: BoxRecord, fileId: string, item: OutboxItem, now: Date, releases: Release[]): { seq: number; auditSeq: number; head: string; at: string } | void {
  const body = item.body;
  switch (item.kind) {
    case 'injection':
    case 'burn': {
      const { batch, index, recordId } = ownedRecord(store, b, body);
      const prior = store.injections.get(recordId);
      const uid = item.kind === 'injection' ? body.uid : undefined;
      if (item.kind === 'injection') {
        if (!isHex(body.uid, 15) || !isHex(body.m4, 32) || !isHex(body.m5, 16)) reject('PKS_BAD_HEX', 'uid, m4 or m5 is not hex of the right length');
      }
      // a proof that came after the box's sweep burned the package (late: true): the ECU holds
      // the key after all, so a verified late injection replaces the burn record
      const lateAfterBurn = item.kind === 'injection' && body.late === true && prior?.boxId === b.boxId && prior.state === 'BURNED';
      // the proof reached us through another box of the plant first (cluster.ts): the ECU's
      // proof decided, so this box's burn of the same key (its sweep never saw it) changes nothing
      if (item.kind === 'burn' && prior?.state === 'VERIFIED' && prior.relayedBy && prior.boxId === b.boxId) return;
      if (prior && !lateAfterBurn) {
        if (prior.boxId === b.boxId && prior.state === (item.kind === 'injection' ? 'VERIFIED' : 'BURNED') && prior.uid === (uid as string | undefined)?.toLowerCase()) return; // a repeat
        reject('PKS_CONFLICT', `key ${recordId} was already reported (${prior.state}${prior.uid ? ` for ECU ${prior.uid}` : ''})`);
      }
      const rec: InjectionRecord = { recordId, boxId: b.boxId, batchId: batch.batchId, pool: batch.pool, state: 'BURNED', at: item.at, fileId, itemId: item.id };
      if (item.kind === 'injection') {
        rec.counter = checkProof(store, batch, index, recordId, uid as string, body);
        rec.state = 'VERIFIED';
        rec.uid = (uid as string).toLowerCase();
        b.counters.verified++;
        if (lateAfterBurn) b.counters.burned--;
        claimSlot(store, b, rec, now);
      } else {
        if (typeof body.reason === 'string') rec.reason = body.reason.slice(0, 200);
        b.counters.burned++;
      }
      store.injections.putSync(recordId, rec);
      return;
    }
    case 'checkpoint': {
      const { seq, prev, head } = body;
      if (!Number.isSafeInteger(seq) || (seq as number) < 0 || typeof prev !== 'string' || typeof head !== 'string' || !HASH.test(prev) || !HASH.test(head))
        reject('PKS_BAD_REQUEST', 'checkpoint needs seq, prev and head');
      const s = seq as number;
      const auditSeq = body.auditSeq;
      const anchor = Number.isSafeInteger(auditSeq) && (auditSeq as number) > 0 ? { seq: s, auditSeq: auditSeq as number, head: (head as string).toLowerCase(), at: now.toISOString() } : undefined;
      const same = store.checkpoints.get([b.boxId, s]);
      if (same) {
        if (same.head === head && same.prev === prev) return anchor; // a repeat: anchored again
        reject('PKS_AUDIT_BROKEN', `checkpoint ${s} differs from the one reported before`);
      }
      const before = store.checkpoints.get([b.boxId, s - 1]);
      const any = b.lastCheckpoint !== undefined;
      if (any && !before) reject('PKS_AUDIT_BROKEN', `checkpoint ${s} does not follow the last one (${b.lastCheckpoint!.seq})`);
      if (before && before.head !== prev) reject('PKS_AUDIT_BROKEN', `checkpoint ${s} does not extend checkpoint ${s - 1}`);
      store.checkpoints.putSync([b.boxId, s], { seq: s, prev: prev as string, head: head as string, fileId, ...(anchor ? { auditSeq: anchor.auditSeq } : {}) });
      if (!b.lastCheckpoint || s > b.lastCheckpoint.seq) b.lastCheckpoint = { seq: s, head: head as string };
      return anchor;
    }
    case 'unlock':
      takeUnlock(store, b.boxId, item);
      return;
    case 'relayed-proof':
      return takeRelayedProof(store, b, fileId, item, now);
    case 'release': {
      const owned = ownedRecord(store, b, body);
      takeRelease(store, b, item, { batchId: owned.batch.batchId, pool: owned.batch.pool, recordId: owned.recordId }, releases);
      return;
    }
    case 'alert':
      pushCapped(b.alerts, { ...body, at: item.at, id: item.id, source: 'box' });
      return;
    default:
      pushCapped(b.events, { kind: item.kind, ...body, at: item.at, id: item.id });
      return;
  }
}

/** Checks an ECU's proof M4/M5 against the key the KMS sent; returns the counter it carries. */
function checkProof(store: KmsStore, batch: BatchRecord, index: number, recordId: string, uid: string, body: Record<string, unknown>): number {
  const p = store.pools.get(batch.pool)!;
  // the box chooses the counter per ECU slot (rework): never below the batch's base counter
  const counter = body.counter === undefined ? p.she.counter : body.counter;
  if (!Number.isInteger(counter) || (counter as number) < p.she.counter || (counter as number) > 0x0fffffff)
    reject('PKS_SHE_INVALID', `counter ${String(body.counter)} is not a SHE counter at or above the batch's ${p.she.counter}`);
  const newKey = store.keyAt(batch.pool, index);
  const authKey = Buffer.from(p.authKey, 'hex');
  try {
    const ok = sheVerify(
      { uid: Buffer.from(uid, 'hex'), keyId: p.she.keyId, authKeyId: p.she.authKeyId, authKey, newKey: newKey!, counter: counter as number, flags: p.she.flags },
      Buffer.from(body.m4 as string, 'hex'),
      Buffer.from(body.m5 as string, 'hex'),
    );
    if (!ok) reject('PKS_SHE_PROOF_MISMATCH', `ECU proof for ${recordId} does not match the key sent`);
  } finally {
    authKey.fill(0);
    newKey?.fill(0);
  }
  return counter as number;
}

/**
 * Issue 16 §2: box `relayer` forwards a proof for a key of box `origin` (same plant) that its
 * tester could not confirm there (origin down). Recorded for the origin box, as its injection.
 */
function takeRelayedProof(store: KmsStore, relayer: BoxRecord, fileId: string, item: OutboxItem, now: Date): void {
  const body = item.body;
  if (typeof body.origin !== 'string' || body.origin === relayer.boxId) return reject('PKS_BAD_REQUEST', 'relayed proof needs the origin box');
  const origin = store.boxes.get(body.origin);
  if (!origin || plantOf(origin) !== plantOf(relayer)) return reject('PKS_BATCH_NOT_FOR_US', `box ${String(body.origin)} is not in plant ${plantOf(relayer)}`);
  if (!isHex(body.uid, 15) || !isHex(body.m4, 32) || !isHex(body.m5, 16)) reject('PKS_BAD_HEX', 'uid, m4 or m5 is not hex of the right length');
  // the tester knows the package id (the KMS record id), not the batch: find the origin's batch
  const rid = typeof body.recordId === 'string' ? parseRecordId(body.recordId) : null;
  const batchId = rid ? [...store.batches.getRange()].find(({ value: x }) => x.boxId === origin.boxId && x.pool === rid.pool && rid.index >= x.from && rid.index < x.from + x.count)?.value.batchId : undefined;
  const { batch, index, recordId } = ownedRecord(store, origin, { ...body, batchId: batchId ?? '' });
  const uid = (body.uid as string).toLowerCase();
  const counter = checkProof(store, batch, index, recordId, uid, body);
  const prior = store.injections.get(recordId);
  if (prior?.state === 'VERIFIED' && prior.uid === uid) return; // the origin's own report (or this relay) came first
  if (prior && prior.state !== 'BURNED') reject('PKS_CONFLICT', `key ${recordId} was already reported (${prior.state})`);
  const rec: InjectionRecord = { recordId, boxId: origin.boxId, batchId: batch.batchId, pool: batch.pool, state: 'VERIFIED', uid, counter, at: item.at, fileId, itemId: item.id, relayedBy: relayer.boxId };
  origin.counters.verified++;
  if (prior) origin.counters.burned--;
  pushCapped(origin.events, { type: 'proof-relayed', recordId, by: relayer.boxId, uid, at: now.toISOString(), source: 'kms' });
  store.boxes.putSync(origin.boxId, origin);
  claimSlot(store, relayer, rec, now);
  store.injections.putSync(recordId, rec);
}
