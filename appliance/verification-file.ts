// The verification file (v1): what the box owes the OEM, carried to the KMS on
// pks/v1/box/<boxCN>/verify. It is the keystore's outbox, oldest first, signed by the box's
// audit key (in the vault), so the KMS can check it came from this box unaltered:
//   { "v": 1, "payload": "<JSON text>", "sig": "<base64 raw r||s ECDSA-P256-SHA256 over
//     verificationFileMessage(payload) = 'pks-verification-file-v1|' + hex SHA-256(payload)>" }
// (appliance/signed-messages.ts; the keystore packs the file, the vault checks it and signs). Payload:
//   { "type": "pks-verification", "v": 1, "fileId", "boxId", "createdAt",
//     "items": [ { "id", "kind", "at", "body" }, ... ] }   (keystore OutboxItem, unchanged)
// Item bodies the KMS reads (the keystore writes them):
//   injection: { batchId, recordId, pool, uid (hex 15 B), m4 (hex 32 B), m5 (hex 16 B), ... }
//   burn:      { batchId, recordId, pool, reason?, ... }
//   checkpoint:{ seq (integer), prev (hex), head (hex), ... }  each extends the one before
//   alert/event/cert: kept as they are in the box's fleet record.
// The KMS answers on `ack` with the ids it has stored durably; the box deletes only those.
import { createVerify, type KeyObject } from 'node:crypto';
import { compileChecker } from './config.js';
import { pksError } from './errors.js';
import { parseJsonOr } from './json.js';
import { ID, NAME } from './schema.js';
import { verificationFileMessage } from './signed-messages.js';
import { OUTBOX_KINDS, type OutboxItem } from './contracts/keystore.js';

/** Largest file the box publishes (the broker takes 256 KiB per packet). */
export const MAX_FILE_BYTES = 200 * 1024;
export const MAX_FILE_ITEMS = 5000;

export interface VerificationPayload {
  type: 'pks-verification';
  v: 1;
  fileId: string;
  boxId: string;
  createdAt: string;
  items: OutboxItem[];
}
export interface SignedFile {
  v: 1;
  payload: string;
  sig: string;
}

const envelopeSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['v', 'payload', 'sig'],
  properties: {
    v: { const: 1 },
    payload: { type: 'string', maxLength: MAX_FILE_BYTES },
    sig: { type: 'string', minLength: 86, maxLength: 100, pattern: '^[A-Za-z0-9+/]*={0,2}$' },
  },
} as const;

const payloadSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'v', 'fileId', 'boxId', 'createdAt', 'items'],
  properties: {
    type: { const: 'pks-verification' },
    v: { const: 1 },
    fileId: ID,
    boxId: NAME,
    createdAt: { type: 'string', maxLength: 40 },
    items: {
      type: 'array',
      maxItems: MAX_FILE_ITEMS,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['id', 'kind', 'at', 'body'],
        properties: {
          id: ID,
          kind: { enum: [...OUTBOX_KINDS] },
          at: { type: 'string', maxLength: 40 },
          body: { type: 'object' },
        },
      },
    },
  },
} as const;

const checkEnvelope = compileChecker<SignedFile>(envelopeSchema, 'verification file', 'PKS_BAD_REQUEST');
const checkPayload = compileChecker<VerificationPayload>(payloadSchema, 'verification payload', 'PKS_BAD_REQUEST');

/**
 * Box side: packs outbox items (oldest first) into one payload under the size limit; returns
 * the payload text and the ids it holds (a prefix of `items`).
 */
export function packFile(fileId: string, boxId: string, items: readonly OutboxItem[], now = new Date()): { text: string; ids: string[] } {
  const head = { type: 'pks-verification', v: 1, fileId, boxId, createdAt: now.toISOString(), items: [] as OutboxItem[] };
  let size = JSON.stringify(head).length + 64;
  for (const it of items) {
    const s = JSON.stringify(it).length + 1;
    if (head.items.length >= MAX_FILE_ITEMS || (head.items.length > 0 && size + s > MAX_FILE_BYTES - 1024)) break;
    head.items.push(it);
    size += s;
  }
  return { text: JSON.stringify(head), ids: head.items.map((i) => i.id) };
}

/** KMS side: checks shape and the audit-key signature, returns the payload. */
export function verifyFile(raw: Buffer | string, auditKey: KeyObject): VerificationPayload {
  const env = checkEnvelope(parseJsonOr('PKS_BAD_REQUEST', 'verification file', raw));
  let ok = false;
  try {
    ok = createVerify('sha256').update(verificationFileMessage(env.payload)).verify({ key: auditKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(env.sig, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_AUDIT_BROKEN', 'verification file signature does not verify with the box audit key');
  return checkPayload(parseJsonOr('PKS_BAD_REQUEST', 'verification payload', env.payload));
}
