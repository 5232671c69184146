// The confidentiality layer of a key batch (see appliance/batch-format.ts for the envelope).
// The KMS makes an ephemeral P-256 key per batch; ECDH with this box's transport key (which
// never leaves the HSM) and HKDF give the batch key; every record is AES-256-GCM under it
// with its batch and record id as associated data, so a ciphertext cannot be moved to
// another id or batch without failing to open. The vault keeps the batch key only wrapped
// by the HSM storage key, so LMDB holds nothing that opens without the HSM.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { pksError } from './errors.js';

const IV = 12;
const TAG = 16;

export function deriveBatchKey(sharedSecret: Buffer, batchId: string, boxId: string): Buffer {
  return Buffer.from(hkdfSync('sha256', sharedSecret, Buffer.from(batchId, 'utf8'), Buffer.from(`pks-batch-v1|${boxId}`, 'utf8'), 32));
}

export const recordAad = (batchId: string, recordId: string): Buffer => Buffer.from(`pks-rec-v1|${batchId}|${recordId}`, 'utf8');
export const authAad = (batchId: string, pool: string): Buffer => Buffer.from(`pks-auth-v1|${batchId}|${pool}`, 'utf8');
export const batchKeyAad = (batchId: string): Buffer => Buffer.from(`pks-batchkey-v1|${batchId}`, 'utf8');

export function aeadSeal(key: Buffer, plaintext: Buffer, aad: Buffer): Buffer {
  const iv = randomBytes(IV);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([iv, ct, c.getAuthTag()]);
}

export function aeadOpen(key: Buffer, blob: Buffer, aad: Buffer): Buffer {
  if (blob.length < IV + TAG) throw pksError('PKS_SEAL_INVALID', 'ciphertext too short');
  try {
    const d = createDecipheriv('aes-256-gcm', key, blob.subarray(0, IV));
    d.setAAD(aad);
    d.setAuthTag(blob.subarray(blob.length - TAG));
    return Buffer.concat([d.update(blob.subarray(IV, blob.length - TAG)), d.final()]);
  } catch {
    throw pksError('PKS_SEAL_INVALID', 'ciphertext does not open under its id');
  }
}
