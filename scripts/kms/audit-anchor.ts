// The KMS's side of the audit anchor (issue 9, item 5): for every checkpoint it takes, a signed
// statement "checkpoint seq of box B names audit entry N with hash H" (appliance/signed-messages.ts
// anchorMessage) by the KMS signer, sent back in the ack and kept by the box. And the check
// of a box's audit log against what the KMS holds: an edit, a deletion, a reordering, a cut
// tail, or the last checkpoints deleted with their entries and the head re-pointed are all
// found here, whatever the box's own store says about itself.
import { anchorMessage, type AnchorFields, type SignedAnchor } from '../../appliance/signed-messages.js';
import { sha256hex } from '../../services/keystore/audit.js';
import type { BatchSigner } from './batches.js';
import type { KmsStore } from './store.js';

export function signAnchors(boxId: string, anchors: readonly Omit<AnchorFields, 'boxId'>[], signer: BatchSigner): SignedAnchor[] {
  return anchors.map((a) => {
    const fields: AnchorFields = { boxId, seq: a.seq, auditSeq: a.auditSeq, head: a.head, at: a.at };
    return { ...fields, sig: signer.sign(anchorMessage(fields)).toString('base64'), cert: signer.certPem };
  });
}

export interface ExportedEntry {
  seq: number;
  line: string;
}

export interface KmsAuditReport {
  ok: boolean;
  entries: number;
  /** the KMS's checkpoints of this box that name an audit entry */
  checkpoints: number;
  /** the highest audit entry a KMS checkpoint names: the log must reach at least this far */
  anchoredSeq: number;
  problems: string[];
}

/**
 * Re-walks an exported audit log (one JSON line per entry, oldest first) and holds it against
 * every checkpoint the KMS took from this box: each named entry must be there with that hash.
 */
export function checkAuditAtKms(store: KmsStore, boxId: string, entries: readonly ExportedEntry[]): KmsAuditReport {
  const problems: string[] = [];
  const hashes = new Map<number, string>();
  let prev = '0'.repeat(64);
  let expect = 1;
  for (const e of entries) {
    if (e.seq !== expect) problems.push(e.seq > expect ? `entries ${expect}..${e.seq - 1} missing` : `entry ${e.seq} out of order`);
    let parsed: { seq?: unknown; prev?: unknown } = {};
    try {
      parsed = JSON.parse(e.line) as typeof parsed;
    } catch {
      problems.push(`entry ${e.seq} is not JSON`);
    }
    if (parsed.seq !== e.seq) problems.push(`entry ${e.seq} carries seq ${String(parsed.seq)}`);
    if (parsed.prev !== prev) problems.push(`entry ${e.seq} does not follow the one before`);
    prev = sha256hex(e.line);
    hashes.set(e.seq, prev);
    expect = e.seq + 1;
    if (problems.length > 20) break;
  }
  let checkpoints = 0;
  let anchoredSeq = 0;
  for (const { value: cp } of store.checkpoints.getRange({ start: [boxId, 0], end: [boxId, Number.MAX_SAFE_INTEGER] })) {
    if (cp.auditSeq === undefined) continue;
    checkpoints++;
    anchoredSeq = Math.max(anchoredSeq, cp.auditSeq);
    const h = hashes.get(cp.auditSeq);
    if (h === undefined) problems.push(`checkpoint ${cp.seq} names entry ${cp.auditSeq}, which the log no longer has`);
    else if (h !== cp.head) problems.push(`entry ${cp.auditSeq} differs from checkpoint ${cp.seq} the KMS holds`);
  }
  if (checkpoints === 0) problems.push(`the KMS holds no checkpoint of ${boxId}: nothing to check against`);
  return { ok: problems.length === 0, entries: entries.length, checkpoints, anchoredSeq, problems };
}
