// Messages the KMS sends a box other than key batches (v1): acknowledgements of verification
// files (`ack`), answers to rotate-cert CSRs (`cert`) and to a box's re-synchronisation (`sync`). They are signed by the KMS's batch
// signer, whose certificate is issued by the KMS CA pinned on the box, so nothing the broker,
// a stolen box MQTT key or anyone else on the broker publishes is taken for the KMS's word.
// Envelope (one MQTT message), the same shape as a batch chunk:
//   { "v": 1, "payload": "<JSON text>", "sig": "<base64 DER ECDSA-P256-SHA256 over payload>",
//     "cert": "<PEM of the KMS batch signer>" }
// Payload: { "type": "pks-kms-message", "v": 1, "kind": "ack"|"cert"|"sync"|"attest", "boxId", "at", "body" }.
// `kind` is the domain separation (an ack can never be read as a certificate answer), `boxId`
// binds it to one box. Replays of a genuine message are harmless by what the box does with
// them: an ack counts only for a file the box is waiting for and only for ids it sent in that
// file; a certificate answer only for the requestId of the rotation in progress.
import { X509Certificate, createVerify } from 'node:crypto';
import { compileChecker } from './config.js';
import { pksError } from './errors.js';
import { parseJsonOr } from './json.js';
import type { TrustAnchor } from './batch-format.js';
import { NAME } from './schema.js';

export const KMS_MESSAGE_KINDS = ['ack', 'cert', 'sync', 'attest'] as const;
export type KmsMessageKind = (typeof KMS_MESSAGE_KINDS)[number];
export const MAX_KMS_MESSAGE_BYTES = 200 * 1024;

export interface SignedKmsMessage {
  v: 1;
  payload: string;
  sig: string;
  cert: string;
}
interface KmsMessagePayload {
  type: 'pks-kms-message';
  v: 1;
  kind: KmsMessageKind;
  boxId: string;
  at: string;
  body: Record<string, unknown>;
}

const checkEnvelope = compileChecker<SignedKmsMessage>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['v', 'payload', 'sig', 'cert'],
    properties: {
      v: { const: 1 },
      payload: { type: 'string', maxLength: MAX_KMS_MESSAGE_BYTES },
      sig: { type: 'string', minLength: 8, maxLength: 200, pattern: '^[A-Za-z0-9+/]*={0,2}$' },
      cert: { type: 'string', maxLength: 8192 },
    },
  },
  'KMS message',
  'PKS_KMS_MESSAGE_INVALID',
);
const checkPayload = compileChecker<KmsMessagePayload>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'v', 'kind', 'boxId', 'at', 'body'],
    properties: {
      type: { const: 'pks-kms-message' },
      v: { const: 1 },
      kind: { enum: KMS_MESSAGE_KINDS },
      boxId: NAME,
      at: { type: 'string', maxLength: 40 },
      body: { type: 'object' },
    },
  },
  'KMS message payload',
  'PKS_KMS_MESSAGE_INVALID',
);

/** KMS side: `sign` is the batch signer (DER ECDSA-P256-SHA256), `certPem` its certificate. */
export function signKmsMessage(kind: KmsMessageKind, boxId: string, body: Record<string, unknown>, signer: { certPem: string; sign(data: Buffer): Buffer }, now = new Date()): SignedKmsMessage {
  const payload: KmsMessagePayload = { type: 'pks-kms-message', v: 1, kind, boxId, at: now.toISOString(), body };
  const text = JSON.stringify(payload);
  return { v: 1, payload: text, sig: signer.sign(Buffer.from(text, 'utf8')).toString('base64'), cert: signer.certPem };
}

const validNow = (c: X509Certificate, now: Date): boolean => now >= new Date(c.validFrom) && now <= new Date(c.validTo);

/**
 * Box side: shape, the signer certificate against the pinned KMS CA (both valid now), the
 * signature, then kind and addressee. Returns the body only when all of it holds; every
 * failure is PKS_KMS_SIGNATURE or PKS_KMS_MESSAGE_INVALID and changes nothing.
 */
export function verifyKmsMessage(raw: Buffer | string, kind: KmsMessageKind, trust: TrustAnchor, boxId: string, now = new Date()): Record<string, unknown> {
  const data = parseJsonOr('PKS_KMS_MESSAGE_INVALID', 'KMS message', raw, MAX_KMS_MESSAGE_BYTES + 16 * 1024);
  if (data && typeof data === 'object' && !('sig' in data)) throw pksError('PKS_KMS_SIGNATURE', 'KMS message is not signed');
  const env = checkEnvelope(data);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(env.cert);
  } catch {
    throw pksError('PKS_KMS_SIGNATURE', 'signer certificate is not a certificate');
  }
  if (!validNow(trust.ca, now)) throw pksError('PKS_KMS_SIGNATURE', 'pinned KMS CA is not valid now');
  if (!cert.checkIssued(trust.ca) || !cert.verify(trust.ca.publicKey)) throw pksError('PKS_KMS_SIGNATURE', 'signer is not issued by the pinned KMS CA');
  if (!validNow(cert, now)) throw pksError('PKS_KMS_SIGNATURE', 'signer certificate is not valid now');
  if (cert.ca) throw pksError('PKS_KMS_SIGNATURE', 'signer certificate is a CA');
  let ok = false;
  try {
    ok = createVerify('sha256').update(env.payload).verify(cert.publicKey, Buffer.from(env.sig, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_KMS_SIGNATURE', 'signature does not verify');
  const msg = checkPayload(parseJsonOr('PKS_KMS_MESSAGE_INVALID', 'payload', env.payload));
  if (msg.kind !== kind) throw pksError('PKS_KMS_MESSAGE_INVALID', `expected a ${kind} message, got ${msg.kind}`);
  if (msg.boxId !== boxId) throw pksError('PKS_KMS_MESSAGE_INVALID', 'message is for another box');
  return msg.body;
}
