// What the box's and the KMS's keys sign, byte for byte: one builder per structure, each with
// its own domain-separation prefix, so a signature made for one purpose never verifies as
// another (a checkpoint is never a verification file, an audit anchor never a batch). The
// vault builds these itself from validated fields (issue 9); verifiers rebuild them here.
import { createHash } from 'node:crypto';

const sha256hex = (s: string | Buffer): string => createHash('sha256').update(s).digest('hex');

export interface CheckpointFields {
  seq: number;
  hash: string;
  prevSeq: number;
  prevHash: string;
  at: string;
}

/** Audit key: a checkpoint of the keystore's audit chain (fixed fields, fixed order). */
export function checkpointMessage(c: CheckpointFields): Buffer {
  return Buffer.from(`pks-audit-checkpoint-v1|${c.seq}|${c.hash}|${c.prevSeq}|${c.prevHash}|${c.at}`, 'utf8');
}

/** Audit key: a verification file, bound to its exact payload text. */
export function verificationFileMessage(payloadText: string): Buffer {
  return Buffer.from(`pks-verification-file-v1|${sha256hex(Buffer.from(payloadText, 'utf8'))}`, 'utf8');
}

export interface AnchorFields {
  boxId: string;
  /** the KMS's checkpoint number (1, 2, 3, ...) */
  seq: number;
  /** the audit entry the checkpoint names, and its hash */
  auditSeq: number;
  head: string;
  /** when the KMS took the checkpoint */
  at: string;
}

/** KMS signer: "I hold checkpoint seq of box boxId, naming audit entry auditSeq with hash head". */
export function anchorMessage(a: AnchorFields): Buffer {
  return Buffer.from(`pks-audit-anchor-v1|${a.boxId}|${a.seq}|${a.auditSeq}|${a.head}|${a.at}`, 'utf8');
}

/** An anchor as the KMS sends it in its ack and the box keeps it. */
export interface SignedAnchor extends AnchorFields {
  /** base64 DER ECDSA-P256-SHA256 over anchorMessage() by the KMS signer */
  sig: string;
  /** PEM of the KMS signer (issued by the pinned KMS CA, KMS batch-signer EKU) */
  cert: string;
}

/** Identity key: "this box (its HSM) asks for a client certificate for this new key" (rotate-cert). */
export function boxCsrMessage(boxId: string, spkiDer: Buffer): Buffer {
  return Buffer.from(`pks-box-csr-v1|${boxId}|${sha256hex(spkiDer)}`, 'utf8');
}
