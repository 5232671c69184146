// The reference KMS's bookkeeping without a broker: disjoint stock per box, batches that a box
// (and only that box) can open, and verification files checked item by item.
import { createHash, createSign, diffieHellman, generateKeyPairSync, randomBytes, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { aeadOpen, authAad, deriveBatchKey, recordAad } from '../../appliance/batch-crypto.js';
import { loadTrustAnchor, verifyChunk } from '../../appliance/batch-format.js';
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

const POOL = 'oemA.bcm.k4';
const authKey = randomBytes(16);
const she = { keyId: 4, authKeyId: 1, counter: 1, flags: 0 };
let dir: string;
let store: KmsStore;
let signer: BatchSigner;
let caPem: string;

interface Box {
  id: string;
  transport: { privateKey: KeyObject; publicKey: KeyObject };
  audit: { privateKey: KeyObject; publicKey: KeyObject };
}
const ec = () => generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spki = (k: KeyObject) => k.export({ type: 'spki', format: 'der' }).toString('base64');
const box1: Box = { id: 'box-1', transport: ec(), audit: ec() };
const box2: Box = { id: 'box-2', transport: ec(), audit: ec() };

test.before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-kms-verify-'));
  const ca = await makeCa(dir, 'kms-ca');
  const s = await issue(dir, 'kms-ca', 'signer', { cn: 'kms-batch-signer', batchSigner: true });
  signer = keySigner(createPrivateKey(readFileSync(s.key)), readFileSync(s.cert, 'utf8'));
  caPem = readFileSync(ca.cert, 'utf8');
  store = new KmsStore(path.join(dir, 'state'));
  importOem(store, { v: 1, oem: 'oemA', pools: [{ pool: POOL, she, authKey: authKey.toString('hex'), generate: 6000 }] });
  for (const b of [box1, box2]) {
    store.boxes.putSync(b.id, {
      boxId: b.id,
      identity: spki(ec().publicKey),
      transport: spki(b.transport.publicKey),
      audit: spki(b.audit.publicKey),
      registeredAt: new Date().toISOString(),
      alerts: [],
      events: [],
      cmdResults: [],
      counters: { batches: 0, keysSent: 0, verified: 0, burned: 0, rejected: 0, files: 0 },
    });
  }
});
test.after(async () => {
  await store?.close();
  await rm(dir, { recursive: true, force: true });
});

/** What a box does with a batch: verify every chunk, open every record with its transport key. */
function openBatch(b: Box, batchId: string): Map<string, { key: Buffer; batchId: string }> {
  const batch = store.batches.get(batchId)!;
  const trust = loadTrustAnchor(caPem);
  const out = new Map<string, { key: Buffer; batchId: string }>();
  for (const c of buildChunks(store, batch, signer)) {
    const p = verifyChunk(JSON.parse(JSON.stringify(c)), trust, b.id);
    const shared = diffieHellman({ privateKey: b.transport.privateKey, publicKey: createPublicKey({ key: Buffer.from(p.epk, 'base64'), format: 'der', type: 'spki' }) });
    const k = deriveBatchKey(shared, p.batchId, b.id);
    assert.equal(aeadOpen(k, Buffer.from(p.she.auth, 'base64'), authAad(p.batchId, p.pool)), authKey);
    for (const [rid, blob] of p.records) out.set(rid, { key: aeadOpen(k, Buffer.from(blob, 'base64'), recordAad(p.batchId, rid)), batchId: p.batchId });
  }
  return out;
}

function injection(id: string, rid: string, batchId: string, key: Buffer, uid = randomBytes(15)): OutboxItem {
  const m = sheMessages({ uid, ...she, authKey, newKey: key });
  return { id, kind: 'injection', at: new Date().toISOString(), body: { batchId, recordId: rid, pool: POOL, uid: uid.toString('hex'), m4: m.m4.toString('hex'), m5: m.m5.toString('hex') } };
}

function signedFile(b: Box, fileId: string, items: OutboxItem[], key = b.audit.privateKey): string {
  const { text } = packFile(fileId, b.id, items);
  const sig = createSign('sha256').update(verificationFileMessage(text)).sign({ key, dsaEncoding: 'ieee-p1363' }).toString('base64');
  return JSON.stringify({ v: 1, payload: text, sig });
}

let keys1: Map<string, { key: Buffer; batchId: string }>;

test('stock is disjoint per box and a repeated re-order gets the same batch', () => {
  const a = allocate(store, 'box-1', 'r1', POOL, 3000);
  const again = allocate(store, 'box-1', 'r1', POOL, 3000);
  const b = allocate(store, 'box-2', 'r1', POOL, 2500);
  assert.ok(a.created && !again.created && b.created);
  assert.is(again.batch.batchId, a.batch.batchId);
  assert.ok(a.batch.from + a.batch.count <= b.batch.from || b.batch.from + b.batch.count <= a.batch.from, 'ranges overlap');
  assert.ok(a.batch.chunks >= 2, 'a 3000-key batch takes several chunks');
  keys1 = openBatch(box1, a.batch.batchId);
  const keys2 = openBatch(box2, b.batch.batchId);
  assert.is(keys1.size, 3000);
  assert.is(keys2.size, 2500);
  for (const rid of keys2.keys()) assert.not.ok(keys1.has(rid));
  // another box cannot even get past the addressee check
  assert.throws(() => openBatch(box2, a.batch.batchId), /another box|PKS_BATCH_NOT_FOR_US/);
});

test('a good verification file is taken whole, and again with the same answer', () => {
  const items = [...keys1].slice(0, 5).map(([rid, v], i) => injection(`o${i}`, rid, v.batchId, v.key));
  items.push({ id: 'o9', kind: 'checkpoint', at: new Date().toISOString(), body: { seq: 1, prev: '00'.repeat(32), head: 'ab'.repeat(32) } });
  const raw = signedFile(box1, 'f1', items);
  const r = takeFile(store, 'box-1', raw);
  assert.equal(r.rejected, []);
  assert.is(r.ids.length, 6);
  assert.is(store.boxes.get('box-1')!.counters.verified, 5);
  const again = takeFile(store, 'box-1', raw);
  assert.ok(again.duplicate);
  assert.equal(again.ids, r.ids);
  // the same items in a new file (the box lost the ack and rebuilt it): accepted as repeats
  assert.equal(takeFile(store, 'box-1', signedFile(box1, 'f1b', items)).rejected, []);
  assert.is(store.boxes.get('box-1')!.counters.verified, 5);
});

test('a forged file is refused whole and records nothing', () => {
  const [rid, v] = [...keys1][10]!;
  const before = store.boxes.get('box-1')!.counters.files;
  assert.throws(() => takeFile(store, 'box-1', signedFile(box1, 'f2', [injection('p1', rid, v.batchId, v.key)], ec().privateKey)), /PKS_AUDIT_BROKEN/);
  const good = signedFile(box1, 'f3', [injection('p1', rid, v.batchId, v.key)]);
  const tampered = good.replace(/"m5\\":\\"[0-9a-f]{2}/, '"m5\\":\\"00');
  assert.is.not(tampered, good);
  assert.throws(() => takeFile(store, 'box-1', tampered), /PKS_AUDIT_BROKEN/);
  assert.is(store.injections.get(rid), undefined);
  assert.is(store.boxes.get('box-1')!.counters.files, before);
});

test('bad proofs, double reports, foreign keys and broken checkpoints are rejected', () => {
  const all = [...keys1];
  const [r20, v20] = all[20]!;
  const [r21, v21] = all[21]!;
  const [r0, v0] = all[0]!;
  const wrongKey = injection('q1', r20, v20.batchId, randomBytes(16));
  const twice = injection('q2', r0, v0.batchId, v0.key); // r0 was reported for another UID in f1
  const foreign = injection('q3', 'oemA.bcm.k4:999999', v21.batchId, v21.key);
  const ok = injection('q4', r21, v21.batchId, v21.key);
  const badCp: OutboxItem = { id: 'q5', kind: 'checkpoint', at: new Date().toISOString(), body: { seq: 2, prev: 'cd'.repeat(32), head: 'ef'.repeat(32) } };
  const r = takeFile(store, 'box-1', signedFile(box1, 'f4', [wrongKey, twice, foreign, ok, badCp]));
  const codes = Object.fromEntries(r.rejected.map((x) => [x.id, x.code]));
  assert.equal(codes, { q1: 'PKS_SHE_PROOF_MISMATCH', q2: 'PKS_CONFLICT', q3: 'PKS_BATCH_INVALID', q5: 'PKS_AUDIT_BROKEN' });
  assert.is(r.ids.length, 5, 'rejected items are acknowledged too (and reported), never resent forever');
  assert.is(store.injections.get(r21)!.state, 'VERIFIED');
  assert.is(store.injections.get(r20), undefined);
  // box-2 cannot report box-1's keys
  const r2 = takeFile(store, 'box-2', signedFile(box2, 'g1', [injection('x1', all[30]![0], all[30]![1].batchId, all[30]![1].key)]));
  assert.is(r2.rejected[0]!.code, 'PKS_BATCH_NOT_FOR_US');
  // a checkpoint that extends the last one is fine
  const good = takeFile(store, 'box-1', signedFile(box1, 'f5', [{ id: 'q6', kind: 'checkpoint', at: '', body: { seq: 2, prev: 'ab'.repeat(32), head: '12'.repeat(32) } }]));
  assert.equal(good.rejected, []);
});

test('OEM files are validated before anything is stored', async () => {
  const f = path.join(dir, 'bad.json');
  await writeFile(f, '{}');
  assert.throws(() => importOem(store, { v: 1, oem: 'oemA', pools: [{ pool: 'oemB.x.y', she, authKey: authKey.toString('hex'), keys: [] }] }), /does not belong/);
  assert.throws(() => importOem(store, { v: 1, oem: 'oemA', pools: [{ pool: POOL, she: { ...she, counter: 2 }, authKey: authKey.toString('hex') }] }), /PKS_CONFLICT/);
  assert.throws(() => importOem(store, { v: 1, oem: 'oemA', pools: [{ pool: 'oemA.x.y', she, authKey: 'zz' }] }), /PKS_BAD_REQUEST/);
  assert.ok(createHash('sha256'));
});


test('issue 10: the box\'s per-ECU counter verifies (rework); below the base is refused; a late proof replaces a burn', () => {
  const [[rid, v], [rid2, v2], [rid3, v3]] = [...keys1].slice(40, 43) as [string, { key: Buffer; batchId: string }][];
  const uid = randomBytes(15);
  const m = sheMessages({ uid, ...she, counter: she.counter + 1, authKey, newKey: v.key });
  const rework: OutboxItem = { id: 'w1', kind: 'injection', at: new Date().toISOString(), body: { batchId: v.batchId, recordId: rid, pool: POOL, uid: uid.toString('hex'), m4: m.m4.toString('hex'), m5: m.m5.toString('hex'), counter: she.counter + 1 } };
  const below = injection('w2', rid2, v2.batchId, v2.key);
  below.body.counter = she.counter - 1;
  const burn: OutboxItem = { id: 'w3', kind: 'burn', at: new Date().toISOString(), body: { batchId: v3.batchId, recordId: rid3, pool: POOL, reason: 'abandoned' } };
  const r = takeFile(store, 'box-1', signedFile(box1, 'fw1', [rework, below, burn]));
  assert.equal(r.rejected.map((x) => x.id), ['w2']);
  assert.is(store.injections.get(rid)!.state, 'VERIFIED');
  const late = injection('w4', rid3, v3.batchId, v3.key);
  late.body.late = true;
  assert.equal(takeFile(store, 'box-1', signedFile(box1, 'fw2', [late])).rejected, []);
  assert.is(store.injections.get(rid3)!.state, 'VERIFIED');
  const notLate = injection('w5', rid2, v2.batchId, v2.key);
  assert.equal(takeFile(store, 'box-1', signedFile(box1, 'fw3', [notLate])).rejected, []);
});

test.run();
