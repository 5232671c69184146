// P-256 encodings the vault needs at its edges: SPKI for public keys, the uncompressed point
// PKCS#11 wants for ECDH, and DER ECDSA signatures for X.509. Kept free of PKCS#11 so callers
// (CSR/certificate code, tests) can use them without an HSM.
import { createPublicKey } from 'node:crypto';
import { pksError } from './errors.js';

// SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) ... }
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d030107034200', 'hex');
/** DER of the prime256v1 OID, the value of CKA_EC_PARAMS for our EC keys. */
export const P256_EC_PARAMS = Buffer.from('06082a8648ce3d030107', 'hex');
const POINT_LEN = 65;
const MAX_SPKI_LEN = 512;

/** CKA_EC_POINT is a DER OCTET STRING around the point (PKCS#11 2.40); some modules give it raw. */
export function pointFromEcPoint(attr: Buffer): Buffer {
  if (attr.length === POINT_LEN + 2 && attr[0] === 0x04 && attr[1] === POINT_LEN && attr[2] === 0x04) {
    return Buffer.from(attr.subarray(2));
  }
  if (attr.length === POINT_LEN && attr[0] === 0x04) return Buffer.from(attr);
  throw pksError('PKS_HSM_FAILURE', 'HSM returned an EC point that is not an uncompressed P-256 point');
}

export function spkiFromPoint(point: Buffer): Buffer {
  if (point.length !== POINT_LEN || point[0] !== 0x04) {
    throw pksError('PKS_HSM_FAILURE', 'EC point is not an uncompressed P-256 point');
  }
  return Buffer.concat([P256_SPKI_PREFIX, point]);
}

/**
 * Validates a peer's SPKI (DER) as a P-256 public key and returns its uncompressed point.
 * OpenSSL's decoder rejects points that are not on the curve, so a point that comes back here
 * is safe to hand to ECDH (no invalid-curve attack through the HSM).
 */
export function p256PointFromSpki(der: unknown): Buffer {
  if (!Buffer.isBuffer(der) || der.length === 0 || der.length > MAX_SPKI_LEN) {
    throw pksError('PKS_BAD_REQUEST', 'peer public key must be a DER SPKI');
  }
  let jwk: { kty?: string; crv?: string; x?: string; y?: string };
  try {
    const key = createPublicKey({ key: der, format: 'der', type: 'spki' });
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new Error('not P-256');
    }
    jwk = key.export({ format: 'jwk' });
  } catch {
    throw pksError('PKS_BAD_REQUEST', 'peer public key is not a valid P-256 SPKI');
  }
  const x = Buffer.from(jwk.x ?? '', 'base64url');
  const y = Buffer.from(jwk.y ?? '', 'base64url');
  if (jwk.crv !== 'P-256' || x.length !== 32 || y.length !== 32) {
    throw pksError('PKS_BAD_REQUEST', 'peer public key is not a valid P-256 SPKI');
  }
  return Buffer.concat([Buffer.from([0x04]), x, y]);
}

function derInteger(v: Buffer): Buffer {
  let i = 0;
  while (i < v.length - 1 && v[i] === 0) i++;
  let body = v.subarray(i);
  // a set top bit would read as negative: prefix a zero byte
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

/** Raw r||s (64 bytes, as CKM_ECDSA returns it) to the DER ECDSA-Sig-Value X.509 wants. */
export function rawToDer(sig: Buffer): Buffer {
  if (!Buffer.isBuffer(sig) || sig.length !== 64) {
    throw pksError('PKS_BAD_REQUEST', 'raw P-256 signature must be 64 bytes');
  }
  const body = Buffer.concat([derInteger(sig.subarray(0, 32)), derInteger(sig.subarray(32))]);
  return Buffer.concat([Buffer.from([0x30, body.length]), body]);
}
