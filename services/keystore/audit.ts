// The audit log: every state change appended in the same LMDB transaction as the change,
// each entry's text carrying the hash of the one before, and checkpoints (seq, hash) signed
// by the vault's audit key. An edit, deletion, reordering or truncation up to the last
// signed checkpoint no longer verifies.
import { createHash, createPublicKey, verify as verifySig, type KeyObject } from 'node:crypto';
import { checkpointMessage } from '../../appliance/signed-messages.js';
import type { Checkpoint, Dbs } from './db.js';

const HEAD = 'audit-head';
const GENESIS = '0'.repeat(64);

export interface Head {
  seq: number;
  hash: string;
}

export const sha256hex = (s: string): string => createHash('sha256').update(s).digest('hex');

export function auditHead(dbs: Dbs): Head {
  return (dbs.meta.get(HEAD) as Head | undefined) ?? { seq: 0, hash: GENESIS };
}

/** Appends one entry; call inside a write transaction so it commits with the change it records. */
export function appendAudit(dbs: Dbs, at: number, event: Record<string, unknown>): number {
  const head = auditHead(dbs);
  const seq = head.seq + 1;
  const line = JSON.stringify({ seq, at: new Date(at).toISOString(), ...event, prev: head.hash });
  const h = sha256hex(line);
  dbs.audit.putSync(seq, { line, h });
  dbs.meta.putSync(HEAD, { seq, hash: h });
  return seq;
}

/** What the audit key signs for a checkpoint: fixed fields, fixed order, no JSON ambiguity. */
export { checkpointMessage };

export function lastCheckpoint(dbs: Dbs): Checkpoint | undefined {
  for (const { value } of dbs.checkpoints.getRange({ reverse: true, limit: 1 })) return value;
  return undefined;
}

export interface AuditReport {
  ok: boolean;
  entries: number;
  checkpoints: number;
  lastCheckpointSeq: number;
  headSeq: number;
  /** entries after the last signed checkpoint: protected by the chain only */
  unsignedTail: number;
  problems: string[];
}

/**
 * Verifies the whole chain and every checkpoint. `auditKey` is the vault's audit public key
 * (SPKI DER or KeyObject), taken from the vault, never from the store being checked.
 */
export function verifyAudit(dbs: Dbs, auditKey: KeyObject | Buffer): AuditReport {
  const key = Buffer.isBuffer(auditKey) ? createPublicKey({ key: auditKey, format: 'der', type: 'spki' }) : auditKey;
  const problems: string[] = [];
  const hashes = new Map<number, string>();
  let expect = 1;
  let prev = GENESIS;
  let entries = 0;
  for (const { key: seq, value } of dbs.audit.getRange({})) {
    entries++;
    if (seq !== expect) {
      problems.push(seq > expect ? `entries ${expect}..${seq - 1} missing` : `entry ${seq} out of order`);
      expect = seq;
    }
    let parsed: { seq?: unknown; prev?: unknown };
    try {
      parsed = JSON.parse(value.line) as { seq?: unknown; prev?: unknown };
    } catch {
      problems.push(`entry ${seq} is not JSON`);
      parsed = {};
    }
    if (parsed.seq !== seq) problems.push(`entry ${seq} carries seq ${String(parsed.seq)}`);
    if (parsed.prev !== prev) problems.push(`entry ${seq} does not follow entry ${seq - 1}`);
    const h = sha256hex(value.line);
    if (h !== value.h) problems.push(`entry ${seq} was edited`);
    hashes.set(seq, h);
    prev = h;
    expect = seq + 1;
    if (problems.length > 20) break;
  }
  const headSeq = expect - 1;
  const stored = auditHead(dbs);
  if (stored.seq !== headSeq || stored.hash !== prev) problems.push(`head says ${stored.seq}, chain ends at ${headSeq}`);

  let cps = 0;
  let last: Checkpoint | undefined;
  for (const { key: seq, value: c } of dbs.checkpoints.getRange({})) {
    cps++;
    const { sig, ...body } = c;
    if (seq !== c.seq) problems.push(`checkpoint ${seq} carries seq ${c.seq}`);
    const good = verifySig('sha256', checkpointMessage(body), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64'));
    if (!good) problems.push(`checkpoint ${c.seq} signature does not verify`);
    if (last && (c.prevSeq !== last.seq || c.prevHash !== last.hash)) problems.push(`checkpoint ${c.seq} does not extend checkpoint ${last.seq}`);
    if (!last && (c.prevSeq !== 0 || c.prevHash !== GENESIS)) problems.push(`first checkpoint ${c.seq} does not start the chain`);
    const h = hashes.get(c.seq);
    if (h === undefined) problems.push(`checkpoint ${c.seq} names an entry that is gone (truncated)`);
    else if (h !== c.hash) problems.push(`entry ${c.seq} differs from its signed checkpoint`);
    last = c;
  }
  const lastSeq = last?.seq ?? 0;
  return { ok: problems.length === 0, entries, checkpoints: cps, lastCheckpointSeq: lastSeq, headSeq, unsignedTail: Math.max(0, headSeq - lastSeq), problems };
}

export { GENESIS };
