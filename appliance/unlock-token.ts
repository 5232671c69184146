// The ECU unlock token, v1 (appliance/contracts/unlock-token.md): a fixed binary layout, so an
// ECU bootloader verifies it with a SHA-256, one ECDSA P-256 verify and byte compares, and no
// parser sits in its trust path. One encoding per token by construction: nothing to
// canonicalise. Shared by the vault (which builds and signs it), the unlock service, the ECU
// simulator and pksctl (which only read it).
import { createHash, createPublicKey, verify as verifySig, type KeyObject } from 'node:crypto';
import { pksError } from './errors.js';

export const TOKEN_MAGIC = Buffer.from('PKUT', 'ascii');
export const TOKEN_VERSION = 1;
/** ECDSA over P-256, SHA-256 of the signed part, signature raw r||s */
export const TOKEN_ALG_ES256 = 1;
export const TOKEN_SIGNED_LEN = 146;
export const TOKEN_LEN = TOKEN_SIGNED_LEN + 64;
export const ECU_TYPE_LEN = 16;
export const UID_MAX = 32;
export const CHALLENGE_MIN = 16;
export const CHALLENGE_MAX = 32;
/** The longest validity any token may claim, whatever a role says (the vault enforces it). */
export const TOKEN_MAX_LIFETIME_S = 7 * 86_400;
/** 9999-12-31T23:59:59Z: a time beyond it has no ISO 8601 form, so describeToken could not show it (issue 17, fuzzing) */
export const TOKEN_TIME_MAX = 253_402_300_799;

const O = { magic: 0, version: 4, alg: 5, reserved: 6, keyId: 8, tokenId: 16, ecuType: 32, uidLen: 48, uid: 49, challengeLen: 81, challenge: 82, permissions: 114, notBefore: 130, notAfter: 138, sig: 146 } as const;

/** ECU type names: what the ECU has burned in, compared byte for byte. */
export const ECU_TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$/;

export interface TokenFields {
  /** 8 bytes: SHA-256 of the signing key's SPKI, first 8 bytes */
  keyId: Buffer;
  /** 16 random bytes, unique per token */
  tokenId: Buffer;
  ecuType: string;
  /** the ECU's UID or serial, 1..32 bytes */
  uid: Buffer;
  /** the ECU's nonce from requestChallengeForAuthentication, 16..32 bytes */
  challenge: Buffer;
  /** 128-bit permission mask */
  permissions: bigint;
  /** seconds since the epoch */
  notBefore: number;
  notAfter: number;
}

export interface Token extends TokenFields {
  /** the 146 signed bytes */
  signed: Buffer;
  sig: Buffer;
  raw: Buffer;
}

export const tokenKeyId = (spki: Buffer): Buffer => createHash('sha256').update(spki).digest().subarray(0, 8);

const MAX_MASK = (1n << 128n) - 1n;

export function maskToBytes(mask: bigint): Buffer {
  if (mask < 0n || mask > MAX_MASK) throw pksError('PKS_OUT_OF_RANGE', 'permission mask must fit 128 bits');
  return Buffer.from(mask.toString(16).padStart(32, '0'), 'hex');
}
export const maskFromBytes = (b: Buffer): bigint => BigInt(`0x${b.toString('hex') || '0'}`);
export const maskHex = (mask: bigint): string => maskToBytes(mask).toString('hex');

/** Checks every field against the layout's limits; throws PKS_BAD_REQUEST naming the field. */
export function checkFields(f: TokenFields): void {
  const bad = (what: string): never => {
    throw pksError('PKS_BAD_REQUEST', `unlock token: ${what}`);
  };
  if (!Buffer.isBuffer(f.keyId) || f.keyId.length !== 8) bad('keyId must be 8 bytes');
  if (!Buffer.isBuffer(f.tokenId) || f.tokenId.length !== 16) bad('tokenId must be 16 bytes');
  if (typeof f.ecuType !== 'string' || !ECU_TYPE_RE.test(f.ecuType)) bad('ecuType must be 1..16 of [A-Za-z0-9_-]');
  if (!Buffer.isBuffer(f.uid) || f.uid.length < 1 || f.uid.length > UID_MAX) bad(`uid must be 1..${UID_MAX} bytes`);
  if (!Buffer.isBuffer(f.challenge) || f.challenge.length < CHALLENGE_MIN || f.challenge.length > CHALLENGE_MAX) bad(`challenge must be ${CHALLENGE_MIN}..${CHALLENGE_MAX} bytes`);
  if (typeof f.permissions !== 'bigint' || f.permissions <= 0n || f.permissions > MAX_MASK) bad('permissions must be a non-empty 128-bit mask');
  if (!Number.isSafeInteger(f.notBefore) || f.notBefore < 0) bad('notBefore must be seconds since the epoch');
  if (!Number.isSafeInteger(f.notAfter) || f.notAfter <= f.notBefore) bad('notAfter must be after notBefore');
  if (f.notAfter > TOKEN_TIME_MAX) bad('notAfter is beyond the year 9999');
  if (f.notAfter - f.notBefore > TOKEN_MAX_LIFETIME_S) bad(`lifetime over ${TOKEN_MAX_LIFETIME_S} s`);
}

/** The 146 bytes the token key signs. */
export function encodeSigned(f: TokenFields): Buffer {
  checkFields(f);
  const b = Buffer.alloc(TOKEN_SIGNED_LEN);
  TOKEN_MAGIC.copy(b, O.magic);
  b[O.version] = TOKEN_VERSION;
  b[O.alg] = TOKEN_ALG_ES256;
  f.keyId.copy(b, O.keyId);
  f.tokenId.copy(b, O.tokenId);
  b.write(f.ecuType, O.ecuType, ECU_TYPE_LEN, 'ascii');
  b[O.uidLen] = f.uid.length;
  f.uid.copy(b, O.uid);
  b[O.challengeLen] = f.challenge.length;
  f.challenge.copy(b, O.challenge);
  maskToBytes(f.permissions).copy(b, O.permissions);
  b.writeBigUInt64BE(BigInt(f.notBefore), O.notBefore);
  b.writeBigUInt64BE(BigInt(f.notAfter), O.notAfter);
  return b;
}

/** Digest the token key signs: SHA-256 of the signed part (the magic is the domain separation). */
export const tokenDigest = (signed: Buffer): Buffer => createHash('sha256').update(signed).digest();

const zeroFrom = (b: Buffer, from: number): boolean => b.subarray(from).every((x) => x === 0);

/**
 * Parses a token without trusting it: exact length, magic, version, algorithm, reserved and
 * padding bytes zero, lengths in range. Throws PKS_UNLOCK_TOKEN_INVALID naming what is wrong.
 */
export function decodeToken(raw: Buffer): Token {
  const bad = (what: string): never => {
    throw pksError('PKS_UNLOCK_TOKEN_INVALID', what);
  };
  if (!Buffer.isBuffer(raw) || raw.length !== TOKEN_LEN) bad(`token must be ${TOKEN_LEN} bytes`);
  if (!raw.subarray(0, 4).equals(TOKEN_MAGIC)) bad('not an unlock token (magic)');
  if (raw[O.version] !== TOKEN_VERSION) bad(`token version ${raw[O.version]} is not supported`);
  if (raw[O.alg] !== TOKEN_ALG_ES256) bad(`token algorithm ${raw[O.alg]} is not supported`);
  if (raw.readUInt16BE(O.reserved) !== 0) bad('reserved bytes must be zero');
  const typeField = raw.subarray(O.ecuType, O.ecuType + ECU_TYPE_LEN);
  const typeEnd = typeField.indexOf(0) === -1 ? ECU_TYPE_LEN : typeField.indexOf(0);
  if (!zeroFrom(typeField, typeEnd)) bad('ecuType padding must be zero');
  const ecuType = typeField.subarray(0, typeEnd).toString('ascii');
  if (!ECU_TYPE_RE.test(ecuType)) bad('ecuType is malformed');
  const uidLen = raw[O.uidLen]!;
  if (uidLen < 1 || uidLen > UID_MAX) bad('uid length out of range');
  const uidField = raw.subarray(O.uid, O.uid + UID_MAX);
  if (!zeroFrom(uidField, uidLen)) bad('uid padding must be zero');
  const chLen = raw[O.challengeLen]!;
  if (chLen < CHALLENGE_MIN || chLen > CHALLENGE_MAX) bad('challenge length out of range');
  const chField = raw.subarray(O.challenge, O.challenge + CHALLENGE_MAX);
  if (!zeroFrom(chField, chLen)) bad('challenge padding must be zero');
  const notBefore = Number(raw.readBigUInt64BE(O.notBefore));
  const notAfter = Number(raw.readBigUInt64BE(O.notAfter));
  if (!Number.isSafeInteger(notBefore) || !Number.isSafeInteger(notAfter) || notAfter <= notBefore || notAfter > TOKEN_TIME_MAX) bad('validity is malformed');
  return {
    keyId: Buffer.from(raw.subarray(O.keyId, O.keyId + 8)),
    tokenId: Buffer.from(raw.subarray(O.tokenId, O.tokenId + 16)),
    ecuType,
    uid: Buffer.from(uidField.subarray(0, uidLen)),
    challenge: Buffer.from(chField.subarray(0, chLen)),
    permissions: maskFromBytes(raw.subarray(O.permissions, O.permissions + 16)),
    notBefore,
    notAfter,
    signed: Buffer.from(raw.subarray(0, TOKEN_SIGNED_LEN)),
    sig: Buffer.from(raw.subarray(O.sig)),
    raw: Buffer.from(raw),
  };
}

/** Whether `t` carries a valid signature by the key with this SPKI (and names that key). */
export function tokenSignatureValid(t: Token, key: KeyObject | Buffer): boolean {
  const k = Buffer.isBuffer(key) ? createPublicKey({ key, format: 'der', type: 'spki' }) : key;
  try {
    return verifySig('sha256', t.signed, { key: k, dsaEncoding: 'ieee-p1363' }, t.sig);
  } catch {
    return false;
  }
}

/** A token as JSON for people and logs (never the signature's meaning: that is the ECU's job). */
export function describeToken(t: TokenFields): Record<string, unknown> {
  return {
    v: TOKEN_VERSION,
    keyId: t.keyId.toString('hex'),
    tokenId: t.tokenId.toString('hex'),
    ecuType: t.ecuType,
    uid: t.uid.toString('hex'),
    challenge: t.challenge.toString('hex'),
    permissions: maskHex(t.permissions),
    notBefore: new Date(t.notBefore * 1000).toISOString(),
    notAfter: new Date(t.notAfter * 1000).toISOString(),
  };
}
