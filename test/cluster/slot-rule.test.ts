// Issue 16 §2 at the KMS, without a broker (scripts/kms/cluster.ts): one ECU slot holds one
// injected key whatever order the boxes report in (the higher SHE counter of the proofs wins),
// a proof relayed by another box of the plant is checked against the key sent to the first, and
// released keys are answered with fresh stock for another box of the same plant only.
import { createSign, diffieHellman, generateKeyPairSync, randomBytes, createPublicKey, type KeyObject } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { aeadOpen, deriveBatchKey, recordAad } from '../../appliance/batch-crypto.js';
import { sheMessages } from '../../appliance/she.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';
import { packFile } from '../../appliance/verification-file.js';
import { verificationFileMessage } from '../../appliance/signed-messages.js';
import { allocate, buildChunks, type BatchSigner } from '../../scripts/kms/batches.js';
import { keySigner } from '../../scripts/kms/signer.js';
import { importOem } from '../../scripts/kms/oem.js';
import { KmsStore } from '../../scripts/kms/store.js';
import { takeFile } from '../../scripts/kms/verify.js';
import { issue, makeCa } from '../helpers/pki.js';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';

const POOL = 'oemC.bcm.k4';
const authKey = randomBytes(16);
const she = { keyId: 4, authKeyId: 1, counter: 1, flags: 0 };
let dir: string;
let store: KmsStore;
let signer: BatchSigner;
const ec = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spki = (k: KeyObject) => k.export({ type: 'spki', format: 'der' }).toString('base64');
interface Box {
  id: string;
  transport: { privateKey: KeyObject; publicKey: KeyObject };
  audit: { privateKey: KeyObject; publicKey: KeyObject };
  keys: [string, { key: Buffer; batchId: string }][];
}
const mk = (id: string): Box => ({ id, transport: ec(), audit: ec(), keys: [] });
const A = mk('box-p1-01');
const B = mk('box-p1-02');
const X = mk('box-p2-01');
let seq = 0;
const fileOf = (b: Box, items: OutboxItem[]): string => {
  const { text } = packFile(`f${++seq}`, b.id, items);
  return JSON.stringify({ v: 1, payload: text, sig: createSign('sha256').update(verificationFileMessage(text)).sign({ key: b.audit.privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64') });
};
const take = (b: Box, items: OutboxItem[]) => takeFile(store, b.id, fileOf(b, items));
const proofBody = (b: Box, k: number, uid: Buffer, counter: number) => {
  const [rid, v] = b.keys[k]!;
  const m = sheMessages({ uid, ...she, counter, authKey, newKey: v.key });
  return { batchId: v.batchId, recordId: rid, packageId: rid, pool: POOL, uid: uid.toString('hex'), counter, m4: m.m4.toString('hex'), m5: m.m5.toString('hex') };
};
const inj = (b: Box, k: number, uid: Buffer, counter: number): OutboxItem => ({ id: `i${++seq}`, kind: 'injection', at: new Date().toISOString(), body: proofBody(b, k, uid, counter) });
const stateOf = (b: Box, k: number) => store.injections.get(b.keys[k]![0]);

test.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-slot-rule-'));
  await makeCa(dir, 'kms-ca');
  const s = await issue(dir, 'kms-ca', 'signer', { cn: 'kms-batch-signer', batchSigner: true });
  signer = keySigner(createPrivateKey(readFileSync(s.key)), readFileSync(s.cert, 'utf8'));
  store = new KmsStore(path.join(dir, 'state'));
  importOem(store, { v: 1, oem: 'oemC', pools: [{ pool: POOL, she, authKey: authKey.toString('hex'), generate: 300 }] });
  for (const b of [A, B, X]) {
    store.boxes.putSync(b.id, { boxId: b.id, identity: spki(ec().publicKey), transport: spki(b.transport.publicKey), audit: spki(b.audit.publicKey), registeredAt: new Date().toISOString(), alerts: [], events: [], cmdResults: [], counters: { batches: 0, keysSent: 0, verified: 0, burned: 0, rejected: 0, files: 0 } });
    const { batch } = allocate(store, b.id, 'r1', POOL, 20);
    for (const c of buildChunks(store, batch, signer)) {
      const p = JSON.parse(c.payload) as { epk: string; records: [string, string][] };
      const k = deriveBatchKey(diffieHellman({ privateKey: b.transport.privateKey, publicKey: createPublicKey({ key: Buffer.from(p.epk, 'base64'), format: 'der', type: 'spki' }) }), batch.batchId, b.id);
      for (const [rid, blob] of p.records) b.keys.push([rid, { key: aeadOpen(k, Buffer.from(blob, 'base64'), recordAad(batch.batchId, rid)), batchId: batch.batchId }]);
    }
  }
});
test.after(async () => {
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

test('two proven keys for one ECU slot: the higher counter stands, the other is superseded, in either order', () => {
  const u1 = randomBytes(15);
  assert.equal(take(A, [inj(A, 0, u1, 1)]).rejected, []);
  assert.equal(take(B, [inj(B, 0, u1, 2)]).rejected, []);
  assert.is(stateOf(A, 0)!.state, 'BURNED');
  assert.match(stateOf(A, 0)!.reason!, /superseded by .* \(counter 2 above 1\)/);
  assert.is(stateOf(B, 0)!.state, 'VERIFIED');
  // the lower one reported last is recorded as superseded at once
  const u2 = randomBytes(15);
  take(B, [inj(B, 1, u2, 3)]);
  assert.equal(take(A, [inj(A, 1, u2, 2)]).rejected, []);
  assert.is(stateOf(A, 1)!.state, 'BURNED');
  assert.is(stateOf(B, 1)!.state, 'VERIFIED');
  // the same counter twice cannot come from a genuine SHE: refused
  const u3 = randomBytes(15);
  take(A, [inj(A, 2, u3, 1)]);
  const r = take(B, [inj(B, 2, u3, 1)]);
  assert.is(r.rejected[0]?.code, 'PKS_CONFLICT');
  const verified = [...store.injections.getRange()].filter((e) => e.value.state === 'VERIFIED');
  for (const u of [u1, u2, u3]) assert.is(verified.filter((e) => e.value.uid === u.toString('hex')).length, 1);
  const a = store.boxes.get(A.id)!.counters;
  assert.equal([a.verified, a.burned], [1, 2]);
});

test('a relayed proof counts for the box that issued the key; its later burn changes nothing', () => {
  const u = randomBytes(15);
  const { batchId: _b, ...body } = proofBody(A, 5, u, 1);
  const relay = (from: Box, b: Record<string, unknown>): OutboxItem => ({ id: `r${++seq}`, kind: 'relayed-proof', at: new Date().toISOString(), body: { origin: A.id, ...b } });
  assert.is(take(X, [relay(X, body)]).rejected[0]?.code, 'PKS_BATCH_NOT_FOR_US', 'not from another plant');
  assert.is(take(B, [relay(B, { ...body, m5: '00'.repeat(16) })]).rejected[0]?.code, 'PKS_SHE_PROOF_MISMATCH');
  assert.equal(take(B, [relay(B, body)]).rejected, []);
  assert.equal([stateOf(A, 5)!.state, stateOf(A, 5)!.boxId, stateOf(A, 5)!.relayedBy], ['VERIFIED', A.id, B.id]);
  const burn: OutboxItem = { id: `b${++seq}`, kind: 'burn', at: new Date().toISOString(), body: { batchId: A.keys[5]![1].batchId, recordId: A.keys[5]![0], pool: POOL, reason: 'abandoned' } };
  assert.equal(take(A, [burn]).rejected, []);
  assert.is(stateOf(A, 5)!.state, 'VERIFIED');
});

test('released keys: recorded, never live again, answered for another box of the plant only', () => {
  const rel = (k: number, to: string): OutboxItem => ({ id: `l${++seq}`, kind: 'release', at: new Date().toISOString(), body: { batchId: A.keys[k]![1].batchId, recordId: A.keys[k]![0], pool: POOL, to, ref: 'cmd-7' } });
  const r = take(A, [rel(10, B.id), rel(11, B.id), rel(12, B.id)]);
  assert.equal(r.rejected, []);
  assert.equal(r.releases, [{ to: B.id, pool: POOL, ref: 'cmd-7', count: 3 }]);
  assert.is(stateOf(A, 10)!.state, 'RELEASED');
  assert.is(take(A, [rel(13, X.id)]).rejected[0]?.code, 'PKS_BAD_REQUEST', 'not to another plant');
  // a released key reported as injected later is a conflict, never a second life
  const again = take(A, [inj(A, 10, randomBytes(15), 1)]);
  assert.is(again.rejected[0]?.code, 'PKS_CONFLICT');
});

test.run();
