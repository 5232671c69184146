// The audit verifies against an anchor outside the store (issue 9, item 5). The box's own
// checkpoints are signed by its own audit key, so whoever can rewrite the store and ask the
// vault can also cut the chain and re-sign: only what the KMS acknowledged is evidence. For
// each checkpoint it takes, the KMS answers a signed anchor (appliance/signed-messages.ts
// anchorMessage) from its signer certificate, issued by the pinned KMS CA with the KMS signer
// EKU; the keystore checks and keeps it. `pksctl audit verify` then says "verified" only up to
// the last anchor, counts what follows as not anchored, and finds a store whose last
// checkpoints were deleted together with their entries and a re-pointed head: the anchor
// names an entry (and its hash) that is no longer there.
import { X509Certificate, createVerify, type KeyObject } from 'node:crypto';
import { checkSigner, type TrustAnchor } from '../../appliance/batch-format.js';
import { pksError } from '../../appliance/errors.js';
import { anchorMessage, type AnchorFields, type SignedAnchor } from '../../appliance/signed-messages.js';
import { verifyAudit, type AuditReport } from './audit.js';
import type { Dbs } from './db.js';

export type { SignedAnchor };

const HASH = /^[0-9a-f]{64}$/;

/** Shape, signer (pinned KMS CA, KMS signer EKU, valid now) and signature; the fields if good. */
export function checkAnchor(a: SignedAnchor, trust: TrustAnchor, boxId: string, now = new Date()): AnchorFields {
  if (a.boxId !== boxId) throw pksError('PKS_AUDIT_BROKEN', `anchor names box ${String(a.boxId).slice(0, 64)}`);
  if (!Number.isSafeInteger(a.seq) || a.seq < 1 || !Number.isSafeInteger(a.auditSeq) || a.auditSeq < 1 || !HASH.test(a.head) || typeof a.at !== 'string' || a.at.length > 40) {
    throw pksError('PKS_BAD_REQUEST', 'anchor fields are malformed');
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(a.cert);
  } catch {
    throw pksError('PKS_AUDIT_BROKEN', 'anchor signer is not a certificate');
  }
  checkSigner(cert, trust, now);
  const fields: AnchorFields = { boxId: a.boxId, seq: a.seq, auditSeq: a.auditSeq, head: a.head, at: a.at };
  let ok = false;
  try {
    ok = createVerify('sha256').update(anchorMessage(fields)).verify(cert.publicKey, Buffer.from(a.sig, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_AUDIT_BROKEN', 'anchor signature does not verify');
  return fields;
}

/**
 * Keeps the anchors the KMS sent, each checked, and only for a checkpoint this store holds
 * with the same head (an anchor for something we never had is not ours to keep).
 */
export async function storeAnchors(dbs: Dbs, anchors: readonly SignedAnchor[], trust: TrustAnchor, boxId: string): Promise<{ stored: number }> {
  const good: SignedAnchor[] = [];
  for (const a of anchors) {
    checkAnchor(a, trust, boxId);
    const cp = dbs.checkpoints.get(a.auditSeq);
    if (!cp || cp.hash !== a.head) throw pksError('PKS_AUDIT_BROKEN', `anchor for entry ${a.auditSeq} does not match a checkpoint of this store`);
    good.push(a);
  }
  await dbs.root.transaction(() => {
    for (const a of good) dbs.anchors.putSync(a.auditSeq, a);
  });
  await dbs.root.flushed;
  return { stored: good.length };
}

export interface AnchoredReport extends AuditReport {
  /** the chain, every checkpoint and every kept anchor verify, and at least one anchor exists */
  verified: boolean;
  anchors: number;
  /** audit entry of the last anchor that verifies (0: none) */
  anchoredSeq: number;
  /** entries after it: protected by the box's own chain and signatures only */
  notAnchored: number;
  /** why an intact history is still not verified */
  unverified?: string;
}

/**
 * The box-side audit: the whole chain and its checkpoints (audit.ts), then every anchor
 * against the pinned KMS CA and against the entry it names. `auditKey` comes from the vault,
 * `trust` from the config: neither from the store being checked.
 */
export function verifyAnchored(dbs: Dbs, auditKey: KeyObject | Buffer, trust: TrustAnchor, boxId: string, now = new Date()): AnchoredReport {
  const r = verifyAudit(dbs, auditKey);
  const problems = [...r.problems];
  let anchors = 0;
  let anchoredSeq = 0;
  for (const { key, value: a } of dbs.anchors.getRange({})) {
    anchors++;
    try {
      checkAnchor(a, trust, boxId, now);
    } catch (e) {
      problems.push(`anchor of entry ${key}: ${(e as { detail?: string }).detail ?? 'does not verify'}`);
      continue;
    }
    const entry = dbs.audit.get(a.auditSeq);
    if (a.auditSeq > r.headSeq || !entry) {
      problems.push(`entry ${a.auditSeq}, anchored at the KMS, is gone: the log was cut back to ${r.headSeq}`);
      continue;
    }
    if (entry.h !== a.head) {
      problems.push(`entry ${a.auditSeq} differs from what the KMS anchored`);
      continue;
    }
    const cp = dbs.checkpoints.get(a.auditSeq);
    if (!cp || cp.hash !== a.head) problems.push(`checkpoint ${a.auditSeq}, anchored at the KMS, is gone or differs`);
    anchoredSeq = Math.max(anchoredSeq, a.auditSeq);
  }
  const ok = problems.length === 0;
  // an empty or never-anchored history is intact at best, never "verified"
  const unverified = r.entries === 0 ? 'the audit log is empty' : anchoredSeq === 0 ? 'no checkpoint is anchored at the KMS yet' : undefined;
  return { ...r, ok, problems, verified: ok && !unverified, ...(unverified ? { unverified } : {}), anchors, anchoredSeq, notAnchored: Math.max(0, r.headSeq - anchoredSeq) };
}
