// The key batch format (v1): how the KMS hands key material to one box. Documented in
// README.md ("Key batch format"); this module is its single implementation on both sides.
//
// A batch is a sequence of chunks; each chunk is one JSON object (one MQTT message, or one
// line of a file for `pksctl import`):
//   { "v": 1, "payload": "<JSON text>", "sig": "<base64 DER ECDSA-P256-SHA256 over payload>",
//     "cert": "<PEM of the KMS batch signer, issued by the KMS CA pinned on the box>" }
// Signing the payload's exact bytes avoids any JSON canonicalisation question. The payload:
//   { "type": "pks-batch", "v": 1, "batchId", "boxId", "pool", "chunk", "chunks", "total",
//     "createdAt", "epk": base64 SPKI of the KMS's ephemeral P-256 key for this batch,
//     "she": { "keyId", "authKeyId", "counter", "flags", "auth": base64 AEAD of the auth key },
//     "records": [[recordId, base64 AEAD of the 16-byte new key], ...] }
// Confidentiality: see batch-crypto.ts (ECDH to the box's transport key, HKDF, AES-256-GCM
// with the batch and record ids as associated data).
import { X509Certificate, createPublicKey, createSign, createVerify, type KeyObject } from 'node:crypto';
import { pksError } from './errors.js';
import { parseJsonOr } from './json.js';
import { compileChecker } from './config.js';
import { ID, NAME, POOL, b64 } from './schema.js';

export const MAX_CHUNK_BYTES = 240 * 1024;
export const MAX_RECORDS_PER_CHUNK = 2500;

export interface SheParams {
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
  /** base64 AEAD of the pool's auth key under the batch key (aad: authAad(batchId, pool)) */
  auth: string;
}

export interface BatchPayload {
  type: 'pks-batch';
  v: 1;
  batchId: string;
  boxId: string;
  pool: string;
  chunk: number;
  chunks: number;
  total: number;
  createdAt: string;
  epk: string;
  she: SheParams;
  records: [string, string][];
}

export interface SignedChunk {
  v: 1;
  payload: string;
  sig: string;
  cert: string;
}

const payloadSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'v', 'batchId', 'boxId', 'pool', 'chunk', 'chunks', 'total', 'createdAt', 'epk', 'she', 'records'],
  properties: {
    type: { const: 'pks-batch' },
    v: { const: 1 },
    batchId: ID,
    boxId: NAME,
    pool: POOL,
    chunk: { type: 'integer', minimum: 0, maximum: 100_000 },
    chunks: { type: 'integer', minimum: 1, maximum: 100_000 },
    total: { type: 'integer', minimum: 1, maximum: 100_000_000 },
    createdAt: { type: 'string', maxLength: 40 },
    epk: b64(200),
    she: {
      type: 'object',
      additionalProperties: false,
      required: ['keyId', 'authKeyId', 'counter', 'flags', 'auth'],
      properties: {
        keyId: { type: 'integer', minimum: 1, maximum: 15 },
        authKeyId: { type: 'integer', minimum: 1, maximum: 15 },
        counter: { type: 'integer', minimum: 0, maximum: 0x0fffffff },
        flags: { type: 'integer', minimum: 0, maximum: 31 },
        auth: b64(64),
      },
    },
    records: {
      type: 'array',
      minItems: 1,
      maxItems: MAX_RECORDS_PER_CHUNK,
      items: { type: 'array', minItems: 2, maxItems: 2, items: [ID, b64(64)] },
    },
  },
} as const;

const chunkSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['v', 'payload', 'sig', 'cert'],
  properties: {
    v: { const: 1 },
    payload: { type: 'string', maxLength: MAX_CHUNK_BYTES },
    sig: b64(80),
    cert: { type: 'string', maxLength: 8192 },
  },
} as const;

const checkChunk = compileChecker<SignedChunk>(chunkSchema, 'batch chunk', 'PKS_BATCH_INVALID');
const checkPayload = compileChecker<BatchPayload>(payloadSchema, 'batch payload', 'PKS_BATCH_INVALID');

/** KMS side: signs one payload with the batch signer's key. */
export function signChunk(payload: BatchPayload, signerKey: KeyObject | string, signerCertPem: string): SignedChunk {
  const text = JSON.stringify(payload);
  const sig = createSign('sha256').update(text).sign(signerKey).toString('base64');
  return { v: 1, payload: text, sig, cert: signerCertPem };
}

/**
 * Extended key usage of a KMS batch signer (an OID under 2.25, RFC 9562 UUID arc): only a
 * certificate carrying it, issued by the pinned KMS CA, may sign batches (issue 9). The KMS's
 * other keys (client CA, TLS) are issued by the same CA but cannot sign stock into a box.
 */
export const BATCH_SIGNER_EKU = '2.25.6459951301980883885668975603564161222';

export interface TrustAnchor {
  /** the pinned KMS CA */
  ca: X509Certificate;
}

export function loadTrustAnchor(pem: string): TrustAnchor {
  try {
    return { ca: new X509Certificate(pem) };
  } catch {
    throw pksError('PKS_CONFIG_INVALID', 'KMS CA certificate is not a PEM certificate');
  }
}

/**
 * A KMS signer certificate the box accepts: issued by the pinned KMS CA, which is itself a CA
 * and valid now; valid now itself, an end entity, and carrying the batch-signer EKU.
 */
export function checkSigner(cert: X509Certificate, trust: TrustAnchor, now: Date): void {
  const within = (c: X509Certificate): boolean => now >= new Date(c.validFrom) && now <= new Date(c.validTo);
  if (!trust.ca.ca) throw pksError('PKS_BATCH_SIGNATURE', 'the pinned KMS CA certificate is not a CA');
  if (!within(trust.ca)) throw pksError('PKS_BATCH_SIGNATURE', 'the pinned KMS CA certificate is not valid now');
  if (!cert.checkIssued(trust.ca) || !cert.verify(trust.ca.publicKey)) throw pksError('PKS_BATCH_SIGNATURE', 'signer is not issued by the pinned KMS CA');
  if (!within(cert)) throw pksError('PKS_BATCH_SIGNATURE', 'signer certificate is not valid now');
  if (cert.ca) throw pksError('PKS_BATCH_SIGNATURE', 'signer certificate is a CA certificate');
  // node lists extended key usages as keyUsage; absent (any purpose) is not enough here
  if (!cert.keyUsage?.includes(BATCH_SIGNER_EKU)) throw pksError('PKS_BATCH_SIGNATURE', 'signer certificate is not a KMS batch signer (EKU missing)');
}

/**
 * Box side: checks the envelope's shape, the signer certificate against the pinned CA and
 * its validity, the signature over the payload, then the payload's shape and addressee.
 * Throws a coded error on any failure; returns the payload only when all of it holds.
 */
export function verifyChunk(raw: unknown, trust: TrustAnchor, boxId: string, now = new Date()): BatchPayload {
  const chunk = checkChunk(raw);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(chunk.cert);
  } catch {
    throw pksError('PKS_BATCH_SIGNATURE', 'signer certificate is not a certificate');
  }
  checkSigner(cert, trust, now);
  const ok = createVerify('sha256').update(chunk.payload).verify(createPublicKey(cert.publicKey.export({ type: 'spki', format: 'pem' })), Buffer.from(chunk.sig, 'base64'));
  if (!ok) throw pksError('PKS_BATCH_SIGNATURE', 'signature does not verify');
  const p = checkPayload(parseJsonOr('PKS_BATCH_INVALID', 'payload', chunk.payload));
  if (p.boxId !== boxId) throw pksError('PKS_BATCH_NOT_FOR_US', `batch is for ${p.boxId}`);
  if (p.chunk >= p.chunks) throw pksError('PKS_BATCH_INVALID', 'chunk index beyond chunk count');
  return p;
}
