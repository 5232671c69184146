// AUTOSAR SHE memory update protocol (SHE functional spec 1.1 / AUTOSAR FO TR "Secure Hardware
// Extensions"): builds the M1..M3 a tester sends to the ECU and the M4/M5 proof the ECU must
// answer with. Pure computation on Node's AES; no I/O, so every service and pksctl share it.
//
// Layout (big-endian bit strings):
//   M1 = UID(120) | ID(4) | AuthID(4)
//   M2 = ENC_CBC,K1,IV=0( C_ID(28) | F_ID(5) | 0(95) | K_new(128) )
//   M3 = CMAC_K2(M1 | M2)
//   M4 = UID(120) | ID(4) | AuthID(4) | ENC_ECB,K3( C_ID(28) | 1 | 0(99) )
//   M5 = CMAC_K4(M4)
//   K1 = KDF(K_auth, ENC_C)  K2 = KDF(K_auth, MAC_C)  K3 = KDF(K_new, ENC_C)  K4 = KDF(K_new, MAC_C)
//   KDF(K, C) = Miyaguchi-Preneel(K | C); C already carries the MP padding, so it is two blocks.

import { createCipheriv, timingSafeEqual } from 'node:crypto';
import { pksError } from './errors.js';

export interface SheUpdate {
  /** ECU unique id, 15 bytes; all-zero is the SHE wildcard (see validateUpdate). */
  uid: Buffer;
  /** Slot to write, 1..15 (4 bits; 0 is SECRET_KEY and never updatable). */
  keyId: number;
  /** Slot whose key authorises the write, 1..15. */
  authKeyId: number;
  /** Current value of the authorising key, 16 bytes. */
  authKey: Buffer;
  /** Value to write, 16 bytes. */
  newKey: Buffer;
  /** C_ID, 28 bits; the ECU refuses a counter not greater than the stored one. */
  counter: number;
  /** F_ID, 5 bits, MSB first: WRITE_PROT, BOOT_PROT, DEBUGGER_PROT, KEY_USAGE, WILDCARD. */
  flags: number;
}

export interface SheMessages {
  m1: Buffer; // 16 bytes
  m2: Buffer; // 32 bytes
  m3: Buffer; // 16 bytes
  m4: Buffer; // 32 bytes
  m5: Buffer; // 16 bytes
}

export const KEY_UPDATE_ENC_C: Buffer = Buffer.from('010153484500800000000000000000b0', 'hex');
export const KEY_UPDATE_MAC_C: Buffer = Buffer.from('010253484500800000000000000000b0', 'hex');

export const SHE_FLAG = Object.freeze({
  WRITE_PROT: 0x10,
  BOOT_PROT: 0x08,
  DEBUGGER_PROT: 0x04,
  KEY_USAGE: 0x02,
  WILDCARD: 0x01,
});

export const SHE_COUNTER_MAX = 0x0fffffff;

const BLOCK = 16;
const UID_BYTES = 15;
const ZERO_IV = Buffer.alloc(BLOCK);

/**
 * Strict hex to bytes. Node's Buffer.from(hex) silently stops at the first bad digit, which
 * would turn a typo in a key into a shorter (and then zero-padded or refused-later) key.
 */
export function parseHex(s: unknown, bytes: number, field: string): Buffer {
  if (typeof s !== 'string') throw pksError('PKS_BAD_HEX', `${field}: expected a hex string`);
  if (s.length !== bytes * 2) {
    throw pksError('PKS_BAD_HEX', `${field}: expected ${bytes * 2} hex digits (${bytes} bytes), got ${s.length} characters`);
  }
  if (!/^[0-9a-fA-F]*$/.test(s)) throw pksError('PKS_BAD_HEX', `${field}: contains a character that is not a hex digit`);
  return Buffer.from(s, 'hex');
}

function requireBuffer(b: unknown, len: number, field: string): Buffer {
  if (!Buffer.isBuffer(b)) throw pksError('PKS_SHE_INVALID', `${field}: must be a Buffer`);
  if (b.length !== len) throw pksError('PKS_SHE_INVALID', `${field}: must be ${len} bytes, got ${b.length}`);
  return b;
}

function requireInt(n: unknown, min: number, max: number, field: string): number {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    throw pksError('PKS_SHE_INVALID', `${field}: must be an integer in ${min}..${max}`);
  }
  return n;
}

function aesEcbBlock(key: Buffer, block: Buffer): Buffer {
  const c = createCipheriv('aes-128-ecb', key, null).setAutoPadding(false);
  return Buffer.concat([c.update(block), c.final()]);
}

function aesCbc(key: Buffer, data: Buffer): Buffer {
  const c = createCipheriv('aes-128-cbc', key, ZERO_IV).setAutoPadding(false);
  return Buffer.concat([c.update(data), c.final()]);
}

// GF(2^128) doubling for the CMAC subkeys (RFC 4493 section 2.3).
function dbl(b: Buffer): Buffer {
  const out = Buffer.alloc(BLOCK);
  for (let i = 0; i < BLOCK; i++) out[i] = ((b[i]! << 1) | (i + 1 < BLOCK ? b[i + 1]! >>> 7 : 0)) & 0xff;
  if (b[0]! & 0x80) out[BLOCK - 1]! ^= 0x87;
  return out;
}

/** AES-128-CMAC (RFC 4493); Node exposes no CMAC, so it is built on the raw block cipher. */
export function aesCmac(key: Buffer, msg: Buffer): Buffer {
  requireBuffer(key, BLOCK, 'CMAC key');
  if (!Buffer.isBuffer(msg)) throw pksError('PKS_SHE_INVALID', 'CMAC message: must be a Buffer');
  const l = aesEcbBlock(key, Buffer.alloc(BLOCK));
  const k1 = dbl(l);
  const k2 = dbl(k1);
  const n = Math.max(1, Math.ceil(msg.length / BLOCK));
  const complete = msg.length > 0 && msg.length % BLOCK === 0;
  const padded = Buffer.alloc(n * BLOCK);
  msg.copy(padded);
  if (!complete) padded[msg.length] = 0x80;
  const sub = complete ? k1 : k2;
  const last = (n - 1) * BLOCK;
  for (let i = 0; i < BLOCK; i++) padded[last + i]! ^= sub[i]!;
  const cbc = aesCbc(key, padded);
  const tag = Buffer.from(cbc.subarray(last));
  for (const b of [l, k1, k2, padded, cbc]) b.fill(0);
  return tag;
}

/**
 * Miyaguchi-Preneel compression with AES-128 over already padded input:
 * H0 = 0, Hi = E_{H(i-1)}(xi) ^ xi ^ H(i-1). Exported for the spec's own test vector.
 */
export function mpCompress(input: Buffer): Buffer {
  if (!Buffer.isBuffer(input) || input.length === 0 || input.length % BLOCK !== 0) {
    throw pksError('PKS_SHE_INVALID', 'Miyaguchi-Preneel input: must be a non-empty multiple of 16 bytes');
  }
  let h: Buffer = Buffer.alloc(BLOCK);
  for (let off = 0; off < input.length; off += BLOCK) {
    const x = input.subarray(off, off + BLOCK);
    const e = aesEcbBlock(h, x);
    for (let i = 0; i < BLOCK; i++) e[i]! ^= x[i]! ^ h[i]!;
    h.fill(0);
    h = e;
  }
  return h;
}

/** SHE key derivation KDF(K, C) = MP(K | C). */
export function sheKdf(key: Buffer, constant: Buffer): Buffer {
  requireBuffer(key, BLOCK, 'KDF key');
  requireBuffer(constant, BLOCK, 'KDF constant');
  const kc = Buffer.concat([key, constant]);
  try {
    return mpCompress(kc);
  } finally {
    kc.fill(0);
  }
}

function isZero(b: Buffer): boolean {
  let acc = 0;
  for (const x of b) acc |= x;
  return acc === 0;
}

function validateUpdate(u: SheUpdate): void {
  if (u === null || typeof u !== 'object') throw pksError('PKS_SHE_INVALID', 'update: must be an object');
  requireBuffer(u.uid, UID_BYTES, 'uid');
  requireInt(u.keyId, 1, 15, 'keyId');
  requireInt(u.authKeyId, 1, 15, 'authKeyId');
  requireBuffer(u.authKey, BLOCK, 'authKey');
  requireBuffer(u.newKey, BLOCK, 'newKey');
  requireInt(u.counter, 0, SHE_COUNTER_MAX, 'counter');
  requireInt(u.flags, 0, 0x1f, 'flags');
  // UID 0 is the SHE wildcard: the ECU accepts it whatever its own UID, unless the key being
  // replaced carries the WILDCARD flag ("may not be updated by wildcard"). Such a message is
  // bound to no ECU, so it can be replayed on every ECU sharing the auth key. We issue one only
  // if it also locks the new key against further wildcard updates, so the unbound path can
  // be used once per slot at most (e.g. first provisioning) and never again.
  if (isZero(u.uid) && (u.flags & SHE_FLAG.WILDCARD) === 0) {
    throw pksError('PKS_SHE_INVALID', 'uid: the all-zero wildcard UID is only allowed together with the WILDCARD flag');
  }
}

function m1Of(uid: Buffer, keyId: number, authKeyId: number): Buffer {
  const m1 = Buffer.alloc(BLOCK);
  uid.copy(m1);
  m1[UID_BYTES] = (keyId << 4) | authKeyId;
  return m1;
}

/** M4 from the UID the ECU reports; the tail block proves the ECU holds the new key. */
function m4m5(uid: Buffer, u: SheUpdate): { m4: Buffer; m5: Buffer } {
  const k3 = sheKdf(u.newKey, KEY_UPDATE_ENC_C);
  const k4 = sheKdf(u.newKey, KEY_UPDATE_MAC_C);
  try {
    const c = Buffer.alloc(BLOCK);
    // C_ID(28) | 1 | 0(99): multiply, not shift, so a 28-bit counter cannot go negative.
    c.writeUInt32BE(u.counter * 16 + 0x8, 0);
    const m4 = Buffer.concat([m1Of(uid, u.keyId, u.authKeyId), aesEcbBlock(k3, c)]);
    return { m4, m5: aesCmac(k4, m4) };
  } finally {
    k3.fill(0);
    k4.fill(0);
  }
}

export function sheMessages(u: SheUpdate): SheMessages {
  validateUpdate(u);
  const m1 = m1Of(u.uid, u.keyId, u.authKeyId);
  const k1 = sheKdf(u.authKey, KEY_UPDATE_ENC_C);
  const k2 = sheKdf(u.authKey, KEY_UPDATE_MAC_C);
  const plain = Buffer.alloc(2 * BLOCK);
  try {
    // C_ID(28) | F_ID(5) | 0(95): the flags straddle byte 3 (4 high bits) and byte 4 (1 bit).
    plain.writeUInt32BE(u.counter * 16 + (u.flags >>> 1), 0);
    plain[4] = (u.flags & 1) << 7;
    u.newKey.copy(plain, BLOCK);
    const m2 = aesCbc(k1, plain);
    const m1m2 = Buffer.concat([m1, m2]);
    const m3 = aesCmac(k2, m1m2);
    const { m4, m5 } = m4m5(u.uid, u);
    return { m1, m2, m3, m4, m5 };
  } finally {
    k1.fill(0);
    k2.fill(0);
    plain.fill(0);
  }
}

/**
 * Checks the ECU's proof of a completed update in constant time. Malformed input (wrong
 * lengths) is an error, a proof that does not match is `false`. For a wildcard update (UID 0)
 * the ECU answers with its own UID in M4; that UID is taken from M4 (M5 authenticates it under
 * a key only the holder of the new key can derive), so the caller can log which ECU it was.
 */
export function sheVerify(u: SheUpdate, m4: Buffer, m5: Buffer): boolean {
  validateUpdate(u);
  requireBuffer(m4, 2 * BLOCK, 'm4');
  requireBuffer(m5, BLOCK, 'm5');
  const uid = isZero(u.uid) ? m4.subarray(0, UID_BYTES) : u.uid;
  const want = m4m5(uid, u);
  return timingSafeEqual(Buffer.concat([want.m4, want.m5]), Buffer.concat([m4, m5]));
}
