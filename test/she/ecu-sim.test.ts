// The strict SHE ECU simulator (scripts/plant/ecu-sim.ts) against the SHE specification's
// rules, the published memory-update example and the project's independent vectors
// (test/she/vectors.json, written by gen-vectors.py from the spec text with OpenSSL's AES).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SHE_FLAG, sheMessages, sheVerify, type SheUpdate } from '../../appliance/she.js';
import {
  BOOT_MAC, BOOT_MAC_KEY, EMPTY_KEY, KEY_1, MASTER_ECU_KEY, RAM_KEY, SheEcu, SheError, authorisers, type SheErc,
} from '../../scripts/plant/ecu-sim.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');
const uid = hex('10000000000000000000000000abcd');
const master = randomBytes(16);
const upd = (over: Partial<SheUpdate> = {}): ReturnType<typeof sheMessages> =>
  sheMessages({ uid, keyId: KEY_1, authKeyId: MASTER_ECU_KEY, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0, ...over });
const load = (ecu: SheEcu, m: ReturnType<typeof sheMessages>) => ecu.loadKey(m.m1, m.m2, m.m3);
function refuses(fn: () => unknown, erc: SheErc, why?: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.instance(e, SheError);
    assert.is((e as SheError).erc, erc, (e as Error).message);
    if (why) assert.match((e as Error).message, why);
    return;
  }
  assert.unreachable(`expected ${erc}`);
}

test('published example (SHE spec / AUTOSAR): KEY_1 under MASTER_ECU_KEY gives the example M4/M5', () => {
  const ecu = new SheEcu(hex('000000000000000000000000000001'), hex('000102030405060708090a0b0c0d0e0f'));
  const p = ecu.loadKey(hex('00000000000000000000000000000141'), hex('2b111e2d93f486566bcbba1d7f7a9797c94643b050fc5d4d7de14cff682203c3'), hex('b9d745e5ace7d41860bc63c2b9f5bb46'));
  assert.is(p.m4.toString('hex'), '00000000000000000000000000000141b472e8d8727d70d57295e74849a27917');
  assert.is(p.m5.toString('hex'), '820d8d95dc11b4668878160cb2a4e23e');
  assert.equal(ecu.slot(KEY_1), { key: hex('0f0e0d0c0b0a09080706050403020100'), counter: 1, flags: 0 });
});

interface Vector { name: string; uid: string; keyId: number; authKeyId: number; authKey: string; newKey: string; counter: number; flags: number; m1: string; m2: string; m3: string; m4: string; m5: string }
const vectors = (JSON.parse(readFileSync(new URL('./vectors.json', import.meta.url), 'utf8')) as { messages: Vector[] }).messages;

test('project vectors: every package the rules allow gives the vector M4/M5, the others are refused as SHE would', () => {
  let accepted = 0;
  let refused = 0;
  for (const v of vectors) {
    const wildcard = /^0+$/.test(v.uid);
    const ecuUid = wildcard ? uid : hex(v.uid);
    // the authorising slot holds the vector's auth key; the target holds an older key (counter 0)
    const slots: Record<number, { key: Buffer; counter: number }> = { [v.authKeyId]: { key: hex(v.authKey), counter: 0 } };
    if (v.keyId !== v.authKeyId) slots[v.keyId] = { key: randomBytes(16), counter: 0 };
    const ecu = new SheEcu(ecuUid, randomBytes(16), { blank: true, slots });
    const allowed = authorisers(v.keyId).includes(v.authKeyId) && v.counter > 0;
    const run = () => ecu.loadKey(hex(v.m1), hex(v.m2), hex(v.m3));
    if (!allowed) {
      refuses(run, authorisers(v.keyId).includes(v.authKeyId) ? 'ERC_KEY_UPDATE_ERROR' : 'ERC_KEY_INVALID');
      refused++;
      continue;
    }
    const p = run();
    if (wildcard) {
      // the ECU answers with its own UID; M5 authenticates it under the new key
      const u: SheUpdate = { uid: hex(v.uid), keyId: v.keyId, authKeyId: v.authKeyId, authKey: hex(v.authKey), newKey: hex(v.newKey), counter: v.counter, flags: v.flags };
      assert.ok(sheVerify(u, p.m4, p.m5), v.name);
      assert.equal(p.m4.subarray(0, 15), uid);
    } else {
      assert.is(p.m4.toString('hex'), v.m4, v.name);
      assert.is(p.m5.toString('hex'), v.m5, v.name);
    }
    assert.equal(ecu.slot(v.keyId), { key: hex(v.newKey), counter: v.keyId === RAM_KEY ? 0 : v.counter, flags: v.flags }, `${v.name}: all five flags kept`);
    accepted++;
  }
  assert.ok(accepted >= 12 && refused >= 3, `accepted ${accepted}, refused ${refused}`);
});

test('who authorises each slot: MASTER everything, BOOT_MAC_KEY for BOOT_MAC, KEY_n itself', () => {
  const bootKey = randomBytes(16);
  const ecu = new SheEcu(uid, master, { slots: { [BOOT_MAC_KEY]: { key: bootKey }, [BOOT_MAC]: { key: randomBytes(16) } } });
  load(ecu, upd({ keyId: BOOT_MAC, authKeyId: BOOT_MAC_KEY, authKey: bootKey }));
  load(ecu, upd({ keyId: BOOT_MAC, authKeyId: MASTER_ECU_KEY, counter: 2 }));
  const k1 = randomBytes(16);
  load(ecu, upd({ newKey: k1 }));
  load(ecu, upd({ authKeyId: KEY_1, authKey: k1, counter: 2 }));
  load(ecu, upd({ keyId: RAM_KEY, authKeyId: KEY_1, authKey: ecu.slot(KEY_1)!.key }));
  refuses(() => load(ecu, upd({ keyId: KEY_1 + 1, authKeyId: KEY_1, authKey: ecu.slot(KEY_1)!.key })), 'ERC_KEY_INVALID', /auth key not allowed/);
  refuses(() => load(ecu, upd({ keyId: MASTER_ECU_KEY, authKeyId: BOOT_MAC_KEY, authKey: bootKey })), 'ERC_KEY_INVALID');
  refuses(() => load(ecu, upd({ keyId: BOOT_MAC_KEY, authKeyId: KEY_1, authKey: ecu.slot(KEY_1)!.key })), 'ERC_KEY_INVALID');
  refuses(() => load(ecu, upd({ keyId: 15, authKeyId: 15 })), 'ERC_KEY_INVALID');
  load(ecu, upd({ keyId: MASTER_ECU_KEY, authKeyId: MASTER_ECU_KEY, counter: 1 }));
});

test('empty slots: the master key cannot load an empty slot; the first load is by the slot itself with the empty value', () => {
  const ecu = new SheEcu(uid, master, { slots: { [KEY_1]: null } });
  refuses(() => load(ecu, upd()), 'ERC_KEY_EMPTY');
  assert.is(ecu.slot(KEY_1), undefined);
  const k = randomBytes(16);
  // the first load of an empty slot: its counter is not compared (there is none), 0 is fine
  load(ecu, upd({ authKeyId: KEY_1, authKey: EMPTY_KEY, newKey: k, counter: 0 }));
  assert.equal(ecu.slot(KEY_1), { key: k, counter: 0, flags: 0 });
  load(ecu, upd({ counter: 1 }));
  // an empty key authorises nothing else
  const blank = new SheEcu(uid, master, { blank: true });
  refuses(() => load(blank, upd({ keyId: MASTER_ECU_KEY })), 'ERC_KEY_UPDATE_ERROR', /M3 does not verify/);
  load(blank, upd({ keyId: MASTER_ECU_KEY, authKey: EMPTY_KEY }));
  refuses(() => load(blank, upd({ authKeyId: KEY_1 + 1 })), 'ERC_KEY_INVALID');
});

test('WRITE_PROTECTION cannot be undone: not by the master key, not by a higher counter, not by a debug erase', () => {
  const ecu = new SheEcu(uid, master);
  load(ecu, upd({ counter: 5, flags: SHE_FLAG.WRITE_PROT }));
  refuses(() => load(ecu, upd({ counter: 6 })), 'ERC_KEY_WRITE_PROTECTED');
  refuses(() => load(ecu, upd({ counter: 0x0fffffff, authKeyId: KEY_1, authKey: ecu.slot(KEY_1)!.key })), 'ERC_KEY_WRITE_PROTECTED');
  refuses(() => ecu.debugErase(), 'ERC_KEY_WRITE_PROTECTED');
  assert.is(ecu.slot(KEY_1)!.flags, SHE_FLAG.WRITE_PROT);
  const other = new SheEcu(uid, master);
  other.debugErase();
  assert.is(other.slot(MASTER_ECU_KEY), undefined);
});

test('WILDCARD: a slot carrying the flag refuses updates to UID 0; counters strictly increase', () => {
  const zero = Buffer.alloc(15);
  const ecu = new SheEcu(uid, master);
  load(ecu, upd({ uid: zero, flags: SHE_FLAG.WILDCARD, counter: 1 }));
  refuses(() => load(ecu, upd({ uid: zero, flags: SHE_FLAG.WILDCARD, counter: 2 })), 'ERC_KEY_UPDATE_ERROR', /wildcard/);
  load(ecu, upd({ counter: 2 }));
  refuses(() => load(ecu, upd({ counter: 2 })), 'ERC_KEY_UPDATE_ERROR', /counter 2 not above 2/);
  refuses(() => load(ecu, upd({ counter: 1 })), 'ERC_KEY_UPDATE_ERROR');
  load(ecu, upd({ counter: 3 }));
  assert.is(ecu.slot(KEY_1)!.counter, 3);
});
test.run();
