// KMS side of the batch format, for the reference KMS, the plant-in-a-box, tests and
// benches: SHE keys encrypted to one box's transport key, signed, cut into chunks.
import { createECDH, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { MAX_RECORDS_PER_CHUNK, signChunk, type BatchPayload, type SignedChunk } from '../../appliance/batch-format.js';
import { aeadSeal, authAad, deriveBatchKey, recordAad } from '../../appliance/batch-crypto.js';

export interface SheKeySet {
  pool: string;
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
  authKey: Buffer;
  keys: ReadonlyArray<{ id: string; key: Buffer }>;
}

export interface Signer {
  key: KeyObject;
  certPem: string;
}

/** ECDH from a fresh ephemeral P-256 key to the box's transport key (SPKI DER). */
export function ephemeralAgreement(transportSpki: Buffer): { epk: Buffer; shared: Buffer } {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  const peer = createPublicKey({ key: transportSpki, format: 'der', type: 'spki' }).export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(peer.x!, 'base64url'), Buffer.from(peer.y!, 'base64url')]);
  const shared = ecdh.computeSecret(point);
  const pub = ecdh.getPublicKey();
  const jwk = { kty: 'EC', crv: 'P-256', x: pub.subarray(1, 33).toString('base64url'), y: pub.subarray(33).toString('base64url') };
  const epk = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'der' });
  return { epk, shared };
}

export function buildBatch(o: { batchId: string; boxId: string; transportSpki: Buffer; signer: Signer; set: SheKeySet; chunkSize?: number; now?: Date }): SignedChunk[] {
  const { epk, shared } = ephemeralAgreement(o.transportSpki);
  const key = deriveBatchKey(shared, o.batchId, o.boxId);
  shared.fill(0);
  const size = Math.min(o.chunkSize ?? MAX_RECORDS_PER_CHUNK, MAX_RECORDS_PER_CHUNK);
  const chunks = Math.max(1, Math.ceil(o.set.keys.length / size));
  const she = { keyId: o.set.keyId, authKeyId: o.set.authKeyId, counter: o.set.counter, flags: o.set.flags, auth: aeadSeal(key, o.set.authKey, authAad(o.batchId, o.set.pool)).toString('base64') };
  const out: SignedChunk[] = [];
  for (let c = 0; c < chunks; c++) {
    const slice = o.set.keys.slice(c * size, (c + 1) * size);
    const payload: BatchPayload = {
      type: 'pks-batch',
      v: 1,
      batchId: o.batchId,
      boxId: o.boxId,
      pool: o.set.pool,
      chunk: c,
      chunks,
      total: o.set.keys.length,
      createdAt: (o.now ?? new Date()).toISOString(),
      epk: epk.toString('base64'),
      she,
      records: slice.map(({ id, key: k }) => [id, aeadSeal(key, k, recordAad(o.batchId, id)).toString('base64')]),
    };
    out.push(signChunk(payload, o.signer.key, o.signer.certPem));
  }
  key.fill(0);
  return out;
}

/** n random SHE keys with ids `<prefix>-<i>`. */
export function randomSheKeys(prefix: string, n: number): { id: string; key: Buffer }[] {
  return Array.from({ length: n }, (_, i) => ({ id: `${prefix}-${i}`, key: randomBytes(16) }));
}

export function loadSigner(keyPem: string, certPem: string): Signer {
  return { key: createPrivateKey(keyPem), certPem };
}
