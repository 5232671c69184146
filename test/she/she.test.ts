import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { PksError } from '../../appliance/errors.js';
import {
  aesCmac, KEY_UPDATE_ENC_C, KEY_UPDATE_MAC_C, mpCompress, parseHex, SHE_FLAG, sheKdf, sheMessages, sheVerify,
  type SheUpdate,
} from '../../appliance/she.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

// AUTOSAR FO TR "Secure Hardware Extensions", memory update example: KEY_1 (id 4) written under
// MASTER_ECU_KEY (id 1).
const spec = (): SheUpdate => ({
  uid: hex('000000000000000000000000000001'),
  keyId: 4,
  authKeyId: 1,
  authKey: hex('000102030405060708090a0b0c0d0e0f'),
  newKey: hex('0f0e0d0c0b0a09080706050403020100'),
  counter: 1,
  flags: 0,
});

function throwsCode(fn: () => unknown, code: string, detail?: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, PksError);
    assert.is((e as PksError).code, code);
    if (detail) assert.match((e as PksError).detail, detail);
    return;
  }
  assert.unreachable(`expected ${code}`);
}

test('SHE spec example: M1..M5', () => {
  const m = sheMessages(spec());
  assert.is(m.m1.toString('hex'), '00000000000000000000000000000141');
  assert.is(m.m2.toString('hex'), '2b111e2d93f486566bcbba1d7f7a9797c94643b050fc5d4d7de14cff682203c3');
  assert.is(m.m3.toString('hex'), 'b9d745e5ace7d41860bc63c2b9f5bb46');
  assert.is(m.m4.toString('hex'), '00000000000000000000000000000141b472e8d8727d70d57295e74849a27917');
  assert.is(m.m5.toString('hex'), '820d8d95dc11b4668878160cb2a4e23e');
});

test('SHE spec example: K1..K4 from the KDF', () => {
  const u = spec();
  assert.is(sheKdf(u.authKey, KEY_UPDATE_ENC_C).toString('hex'), '118a46447a770d87828a69c222e2d17e');
  assert.is(sheKdf(u.authKey, KEY_UPDATE_MAC_C).toString('hex'), '2ebb2a3da62dbd64b18ba6493e9fbe22');
  assert.is(sheKdf(u.newKey, KEY_UPDATE_ENC_C).toString('hex'), 'ed2de7864a47f6bac319a9dc496a788f');
  assert.is(sheKdf(u.newKey, KEY_UPDATE_MAC_C).toString('hex'), 'ec9386fefaa1c598246144343de5f26a');
});

test('SHE spec example: Miyaguchi-Preneel compression', () => {
  const input = hex('6bc1bee22e409f96e93d7e117393172a' + 'ae2d8a571e03ac9c9eb76fac45af8e51' + '80000000000000000000000000000100');
  assert.is(mpCompress(input).toString('hex'), 'c7277a0dc1fb853b5f4d9cbd26be40c6');
  throwsCode(() => mpCompress(Buffer.alloc(17)), 'PKS_SHE_INVALID');
  throwsCode(() => mpCompress(Buffer.alloc(0)), 'PKS_SHE_INVALID');
});

test('AES-CMAC: RFC 4493 examples 1-4', () => {
  const key = hex('2b7e151628aed2a6abf7158809cf4f3c');
  const msg = hex(
    '6bc1bee22e409f96e93d7e117393172a' + 'ae2d8a571e03ac9c9eb76fac45af8e51' +
    '30c81c46a35ce411e5fbc1191a0a52ef' + 'f69f2445df4f9b17ad2b417be66c3710',
  );
  assert.is(aesCmac(key, msg.subarray(0, 0)).toString('hex'), 'bb1d6929e95937287fa37d129b756746');
  assert.is(aesCmac(key, msg.subarray(0, 16)).toString('hex'), '070a16b46b4d4144f79bdd9dd04a287c');
  assert.is(aesCmac(key, msg.subarray(0, 40)).toString('hex'), 'dfa66747de9ae63030ca32611497c827');
  assert.is(aesCmac(key, msg).toString('hex'), '51f0bebf7e3b9d92fc49741779363cfe');
});

test('AES-CMAC: refuses a key that is not 16 bytes or a non-Buffer message', () => {
  throwsCode(() => aesCmac(Buffer.alloc(32), Buffer.alloc(1)), 'PKS_SHE_INVALID', /CMAC key/);
  throwsCode(() => aesCmac(Buffer.alloc(16), 'abc' as unknown as Buffer), 'PKS_SHE_INVALID', /CMAC message/);
});

interface MsgVector {
  name: string; uid: string; keyId: number; authKeyId: number; authKey: string; newKey: string;
  counter: number; flags: number; m1: string; m2: string; m3: string; m4: string; m5: string;
}
interface Vectors {
  messages: MsgVector[];
  cmac: { key: string; msg: string; tag: string }[];
  kdf: { key: string; enc: string; mac: string }[];
}
const vectors = JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8')) as Vectors;

const updateOf = (v: MsgVector): SheUpdate => ({
  uid: hex(v.uid), keyId: v.keyId, authKeyId: v.authKeyId, authKey: hex(v.authKey), newKey: hex(v.newKey),
  counter: v.counter, flags: v.flags,
});

test('independent reference vectors (gen-vectors.py) cover flags, counters and the wildcard', () => {
  assert.ok(vectors.messages.length >= 15);
  const flags = new Set(vectors.messages.map((v) => v.flags));
  for (const f of [0x10, 0x08, 0x04, 0x02, 0x01, 0x1f, 0]) assert.ok(flags.has(f), `flags ${f} covered`);
  const counters = new Set(vectors.messages.map((v) => v.counter));
  for (const c of [0, 1, 0x0fffffff]) assert.ok(counters.has(c), `counter ${c} covered`);
  assert.ok(vectors.messages.some((v) => /^0+$/.test(v.uid)), 'wildcard UID covered');
});

for (const v of vectors.messages) {
  test(`reference vector: ${v.name}`, () => {
    const m = sheMessages(updateOf(v));
    assert.is(m.m1.toString('hex'), v.m1, 'M1');
    assert.is(m.m2.toString('hex'), v.m2, 'M2');
    assert.is(m.m3.toString('hex'), v.m3, 'M3');
    assert.is(m.m4.toString('hex'), v.m4, 'M4');
    assert.is(m.m5.toString('hex'), v.m5, 'M5');
    assert.ok(sheVerify(updateOf(v), hex(v.m4), hex(v.m5)));
  });
}

test('reference CMAC and KDF vectors', () => {
  for (const c of vectors.cmac) assert.is(aesCmac(hex(c.key), hex(c.msg)).toString('hex'), c.tag, `len ${c.msg.length / 2}`);
  for (const k of vectors.kdf) {
    assert.is(sheKdf(hex(k.key), KEY_UPDATE_ENC_C).toString('hex'), k.enc);
    assert.is(sheKdf(hex(k.key), KEY_UPDATE_MAC_C).toString('hex'), k.mac);
  }
});

test('sheMessages leaves the caller buffers untouched', () => {
  const u = spec();
  const before = Buffer.concat([u.uid, u.authKey, u.newKey]);
  sheMessages(u);
  sheMessages(u);
  assert.equal(Buffer.concat([u.uid, u.authKey, u.newKey]), before);
});

test('sheVerify: true for the right proof, false for any tampered byte or other counter/key', () => {
  const u = spec();
  const { m4, m5 } = sheMessages(u);
  assert.ok(sheVerify(u, m4, m5));
  for (let i = 0; i < 32; i++) {
    const t = Buffer.from(m4);
    t[i]! ^= 1;
    assert.not.ok(sheVerify(u, t, m5), `M4 byte ${i}`);
  }
  for (let i = 0; i < 16; i++) {
    const t = Buffer.from(m5);
    t[i]! ^= 0x80;
    assert.not.ok(sheVerify(u, m4, t), `M5 byte ${i}`);
  }
  assert.not.ok(sheVerify({ ...u, counter: 2 }, m4, m5));
  assert.not.ok(sheVerify({ ...u, newKey: hex('0f0e0d0c0b0a09080706050403020101') }, m4, m5));
  assert.not.ok(sheVerify({ ...u, uid: hex('000000000000000000000000000002') }, m4, m5));
  assert.not.ok(sheVerify({ ...u, keyId: 5 }, m4, m5));
});

test('sheVerify: a wildcard update accepts the proof carrying the ECU\'s own UID', () => {
  const wild: SheUpdate = { ...spec(), uid: Buffer.alloc(15), flags: SHE_FLAG.WILDCARD };
  // What a real ECU with this UID answers: M4/M5 over its own UID.
  const ecu = sheMessages({ ...wild, uid: hex('0102030405060708090a0b0c0d0e0f') });
  assert.ok(sheVerify(wild, ecu.m4, ecu.m5));
  const forged = Buffer.from(ecu.m4);
  forged[0]! ^= 1; // a different UID claimed without the new key: M5 no longer matches
  assert.not.ok(sheVerify(wild, forged, ecu.m5));
  // A non-wildcard update does not accept another ECU's proof.
  const bound = { ...wild, uid: hex('0102030405060708090a0b0c0d0e10') };
  assert.not.ok(sheVerify(bound, ecu.m4, ecu.m5));
});

test('sheVerify: malformed proof lengths are coded errors, not false', () => {
  const u = spec();
  const { m4, m5 } = sheMessages(u);
  throwsCode(() => sheVerify(u, m4.subarray(0, 31), m5), 'PKS_SHE_INVALID', /m4/);
  throwsCode(() => sheVerify(u, m4, Buffer.concat([m5, Buffer.alloc(1)])), 'PKS_SHE_INVALID', /m5/);
  throwsCode(() => sheVerify(u, 'x' as unknown as Buffer, m5), 'PKS_SHE_INVALID', /m4/);
  throwsCode(() => sheVerify({ ...u, keyId: 0 }, m4, m5), 'PKS_SHE_INVALID', /keyId/);
});

const bad: [string, Partial<Record<keyof SheUpdate, unknown>>, RegExp][] = [
  ['uid 14 bytes', { uid: Buffer.alloc(14, 1) }, /uid/],
  ['uid 16 bytes', { uid: Buffer.alloc(16, 1) }, /uid/],
  ['uid as string', { uid: '000000000000000000000000000001' }, /uid/],
  ['zero uid without WILDCARD', { uid: Buffer.alloc(15), flags: 0 }, /wildcard/],
  ['zero uid with all other flags', { uid: Buffer.alloc(15), flags: 0x1e }, /wildcard/],
  ['keyId 0 (SECRET_KEY)', { keyId: 0 }, /keyId/],
  ['keyId 16', { keyId: 16 }, /keyId/],
  ['keyId 1.5', { keyId: 1.5 }, /keyId/],
  ['keyId NaN', { keyId: NaN }, /keyId/],
  ['keyId string', { keyId: '4' }, /keyId/],
  ['authKeyId 0', { authKeyId: 0 }, /authKeyId/],
  ['authKeyId 16', { authKeyId: 16 }, /authKeyId/],
  ['authKeyId -1', { authKeyId: -1 }, /authKeyId/],
  ['authKey 15 bytes', { authKey: Buffer.alloc(15) }, /authKey/],
  ['authKey 32 bytes', { authKey: Buffer.alloc(32) }, /authKey/],
  ['authKey Uint8Array', { authKey: new Uint8Array(16) }, /authKey/],
  ['newKey 17 bytes', { newKey: Buffer.alloc(17) }, /newKey/],
  ['newKey missing', { newKey: undefined }, /newKey/],
  ['counter -1', { counter: -1 }, /counter/],
  ['counter 2^28', { counter: 0x10000000 }, /counter/],
  ['counter 1.5', { counter: 1.5 }, /counter/],
  ['counter Infinity', { counter: Infinity }, /counter/],
  ['counter bigint', { counter: 1n }, /counter/],
  ['flags 32', { flags: 32 }, /flags/],
  ['flags -1', { flags: -1 }, /flags/],
  ['flags 0.5', { flags: 0.5 }, /flags/],
];
for (const [name, patch, detail] of bad) {
  test(`sheMessages refuses ${name}`, () => {
    throwsCode(() => sheMessages({ ...spec(), ...patch } as SheUpdate), 'PKS_SHE_INVALID', detail);
  });
}

test('sheMessages refuses a non-object', () => {
  throwsCode(() => sheMessages(null as unknown as SheUpdate), 'PKS_SHE_INVALID');
});

test('WILDCARD flag with a real UID and the zero UID with WILDCARD are both accepted', () => {
  assert.is(sheMessages({ ...spec(), flags: SHE_FLAG.WILDCARD }).m1.length, 16);
  const m = sheMessages({ ...spec(), uid: Buffer.alloc(15), flags: SHE_FLAG.WILDCARD | SHE_FLAG.WRITE_PROT });
  assert.is(m.m1.toString('hex'), '00000000000000000000000000000041');
});

test('parseHex: accepts either case, refuses wrong length and non-hex', () => {
  assert.equal(parseHex('0A0b', 2, 'x'), hex('0a0b'));
  throwsCode(() => parseHex('0a0', 2, 'field'), 'PKS_BAD_HEX', /field/);
  throwsCode(() => parseHex('0a0b0c', 2, 'field'), 'PKS_BAD_HEX', /4 hex digits/);
  throwsCode(() => parseHex('0g0b', 2, 'field'), 'PKS_BAD_HEX', /not a hex digit/);
  throwsCode(() => parseHex('0x0b', 2, 'field'), 'PKS_BAD_HEX');
  throwsCode(() => parseHex(' a0b', 2, 'field'), 'PKS_BAD_HEX');
  throwsCode(() => parseHex('', 2, 'field'), 'PKS_BAD_HEX');
  throwsCode(() => parseHex(1234, 2, 'field'), 'PKS_BAD_HEX', /hex string/);
  assert.equal(parseHex('', 0, 'empty'), Buffer.alloc(0));
});

test.run();
