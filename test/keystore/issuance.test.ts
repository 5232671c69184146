// The keystore end to end against a real vault (SoftHSM) and real LMDB: import, exactly-once
// issuance, proofs, burning, refusals of bad batches and bad input, and no clear key on disk.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { randomSheKeys, type SheKeySet } from '../../scripts/plant/batch.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { sheMessages } from '../../appliance/she.js';
import type { ReserveResponse, StatsResponse } from '../../appliance/contracts/keystore.js';
import type { IpcClient } from '../../appliance/ipc.js';

const POOL = 'oem1.ecuA.4';
const POOL2 = 'oem1.ecuB.5';
const master = randomBytes(16);
const keys = randomSheKeys('b1', 40);
const set: SheKeySet = { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys };

const t = suite<{ box: Box; tester: IpcClient; uplink: IpcClient }>('keystore issuance');
t.before(async (ctx) => {
  try {
    ctx.box = await startBox({ pools: [{ pool: POOL, minimum: 5, reorder: 20 }, { pool: POOL2, minimum: 5, reorder: 20 }], checkpointEvery: 5 });
    // 'nope.nope.1' is granted but does not exist: PKS_POOL_UNKNOWN below, not PKS_POOL_FORBIDDEN
    await ctx.box.registerTesters(['tester-1', 'tester-2'], [POOL, POOL2, 'nope.nope.1']);
    await ctx.box.registerTesters(['tester-3'], [POOL]);
    ctx.tester = ctx.box.keystore.client('tester-api');
    ctx.uplink = ctx.box.keystore.client('uplink');
  } catch (e) {
    console.error('setup failed', e);
    throw e;
  }
});
t.after(async (ctx) => {
  await ctx.box?.stop();
});

const uid = (n: number): string => n.toString(16).padStart(30, '0');
const reserve = (c: IpcClient, u: string, tester = 'tester-1', pool = POOL) => c.call<ReserveResponse>('reserve', { pool, uid: u, tester });
const stats = async (c: IpcClient) => (await c.call<StatsResponse>('stats')).pools;
const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return (e as { code: string }).code;
  }
  return 'no error';
};

t('imports a batch in chunks, idempotently and in any order', async ({ box }) => {
  const chunks = box.batch('batch-1', set, 15);
  assert.is(chunks.length, 3);
  const [a, b, c] = await box.importChunks([chunks[2]!, chunks[0]!, chunks[2]!, chunks[1]!]);
  assert.equal([a!.imported, a!.complete], [10, false]);
  assert.equal(a!.missing, [0, 1]);
  assert.is(c!.duplicate, true);
  assert.is(c!.imported, 0);
  const s = await stats(box.keystore.client('pksctl'));
  assert.is(s[POOL]!.available, 40);
  assert.ok(b);
});

t('issues the package the ECU accepts, exactly once per ECU and slot', async ({ box, tester }) => {
  const u = uid(0x1001);
  const p1 = await reserve(tester, u);
  const p2 = await reserve(tester, u);
  assert.is(p1.reused, false);
  assert.is(p2.reused, true);
  assert.is(p2.packageId, p1.packageId);
  assert.equal([p2.m1, p2.m2, p2.m3], [p1.m1, p1.m2, p1.m3]);
  // the package is the one the KMS sent for this record
  const key = keys.find((k) => k.id === p1.packageId)!.key;
  const m = sheMessages({ uid: Buffer.from(u, 'hex'), keyId: 4, authKeyId: 1, authKey: master, newKey: key, counter: 1, flags: 0 });
  assert.is(p1.m3, m.m3.toString('hex'));
  const ecu = new SheEcu(Buffer.from(u, 'hex'), master);
  const proof = ecu.loadKey(Buffer.from(p1.m1, 'hex'), Buffer.from(p1.m2, 'hex'), Buffer.from(p1.m3, 'hex'));
  const ok = await tester.call<{ state: string; verified: boolean }>('confirm', { packageId: p1.packageId, tester: 'tester-1', m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
  assert.equal(ok, { packageId: p1.packageId, state: 'INJECTED', verified: true });
  // confirming again is idempotent; another ECU gets another key
  const again = await tester.call<{ state: string }>('confirm', { packageId: p1.packageId, tester: 'tester-1', m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
  assert.is(again.state, 'INJECTED');
  const other = await reserve(tester, uid(0x1002));
  assert.is.not(other.packageId, p1.packageId);
  const s = await stats(box.keystore.client('pksctl'));
  assert.equal([s[POOL]!.available, s[POOL]!.reserved, s[POOL]!.injected], [38, 1, 1]);
});

t('a wrong proof burns the key and the ECU gets a fresh one next time', async ({ box, tester }) => {
  const u = uid(0x2001);
  const p = await reserve(tester, u);
  const bad = await tester.call<{ state: string; verified: boolean }>('confirm', { packageId: p.packageId, tester: 'tester-1', m4: '00'.repeat(32), m5: '00'.repeat(16) });
  assert.equal([bad.state, bad.verified], ['BURNED', false]);
  const next = await reserve(tester, u);
  assert.is.not(next.packageId, p.packageId);
  assert.is(next.reused, false);
  assert.is(await code(tester.call('confirm', { packageId: p.packageId, tester: 'tester-1', m4: '00'.repeat(32), m5: '00'.repeat(16) })), 'PKS_STATE_INVALID');
  const items = (await box.keystore.client('uplink').call<{ items: { kind: string; body: Record<string, unknown> }[] }>('outbox-peek', {})).items;
  assert.ok(items.some((i) => i.kind === 'burn' && i.body.packageId === p.packageId));
  assert.ok(items.some((i) => i.kind === 'alert' && i.body.kind === 'proof-mismatch'));
});

t('a failed injection burns the key; another tester cannot touch it', async ({ tester }) => {
  const p = await reserve(tester, uid(0x3001));
  assert.is(await code(tester.call('fail', { packageId: p.packageId, tester: 'tester-2', reason: 'not mine' })), 'PKS_NOT_FOUND');
  const r = await tester.call<{ state: string }>('fail', { packageId: p.packageId, tester: 'tester-1', reason: 'ECU did not answer' });
  assert.is(r.state, 'BURNED');
  const h = await tester.call<{ items: { packageId: string; state: string }[] }>('history', { tester: 'tester-1', limit: 3 });
  assert.is(h.items[0]!.packageId, p.packageId);
  assert.is(h.items[0]!.state, 'BURNED');
});

t('bad batches are refused and change nothing', async ({ box }) => {
  const admin = box.keystore.client('pksctl');
  const before = await stats(admin);
  const good = box.batch('batch-2', { ...set, keys: randomSheKeys('b2', 3) })[0]!;
  const tampered = { ...good, payload: good.payload.replace('"total":3', '"total":4') };
  assert.is(await code(admin.call('import-chunk', { chunk: tampered })), 'PKS_BATCH_SIGNATURE');
  const foreign = { ...good, cert: readFileSync(box.kms.caCert, 'utf8') };
  assert.is(await code(admin.call('import-chunk', { chunk: foreign })), 'PKS_BATCH_SIGNATURE');
  assert.is(await code(admin.call('import-chunk', { chunk: { v: 1, payload: 'x' } })), 'PKS_BATCH_INVALID');
  // a batch for another box (validly signed) is refused
  const other = (await import('../../scripts/plant/batch.js')).buildBatch({ batchId: 'batch-x', boxId: 'box-other', transportSpki: box.transportSpki, signer: box.kms.signer, set: { ...set, keys: randomSheKeys('bx', 2) } })[0]!;
  assert.is(await code(admin.call('import-chunk', { chunk: other })), 'PKS_BATCH_NOT_FOR_US');
  // re-sending keys already known (even under a new batch id) never resurrects them
  const replay = box.batch('batch-3', { ...set, keys: keys.slice(0, 5) });
  const [r] = await box.importChunks(replay);
  assert.is(r!.imported, 0);
  assert.equal(await stats(admin), before);
});

t('bad input and foreign callers get coded errors', async ({ box, tester }) => {
  assert.is(await code(tester.call('reserve', { pool: POOL, uid: 'zz', tester: 'tester-1' })), 'PKS_BAD_REQUEST');
  assert.is(await code(tester.call('reserve', { pool: POOL, uid: uid(1), tester: 'tester-1', extra: 1 })), 'PKS_BAD_REQUEST');
  assert.is(await code(tester.call('reserve', { pool: 'nope.nope.1', uid: uid(1), tester: 'tester-1' })), 'PKS_POOL_UNKNOWN');
  // the keystore checks the grant itself, whatever the caller says (grant.ts)
  assert.is(await code(tester.call('reserve', { pool: POOL2, uid: uid(1), tester: 'tester-3' })), 'PKS_POOL_FORBIDDEN');
  assert.is(await code(tester.call('reserve', { pool: POOL, uid: uid(1), tester: 'nobody' })), 'PKS_TESTER_UNKNOWN');
  assert.is(await code(tester.call('reserve', { pool: POOL, uid: uid(1), tester: 'tester-3', station: 'elsewhere' })), 'PKS_BAD_REQUEST');
  assert.is(await code(tester.call('confirm', { packageId: 'pkg-x', tester: 'nobody', m4: '00'.repeat(32), m5: '00'.repeat(16) })), 'PKS_TESTER_UNKNOWN');
  assert.is(await code(reserve(tester, uid(5), 'tester-1', POOL2)), 'PKS_POOL_EMPTY');
  assert.is(await code(reserve(tester, uid(0))), 'PKS_SHE_INVALID');
  assert.is(await code(tester.call('import-chunk', { chunk: {} })), 'PKS_IPC_FORBIDDEN');
  assert.is(await code(tester.call('outbox-ack', { ids: [] })), 'PKS_IPC_FORBIDDEN');
  assert.is(await code(box.vault.client('tester-api').call('she-prepare', {})), 'PKS_IPC_FORBIDDEN');
  assert.is(await code(tester.call('no-such-verb', {})), 'PKS_IPC_UNKNOWN_VERB');
  assert.is(await code(tester.call('confirm', { packageId: 'b1-39', tester: 'tester-1', m4: '00'.repeat(32), m5: '00'.repeat(16) })), 'PKS_NOT_FOUND');
});

t('acknowledged injections become REPORTED and leave the outbox', async ({ box, uplink }) => {
  await uplink.call('checkpoint', {});
  const items = (await uplink.call<{ items: { id: string; kind: string }[] }>('outbox-peek', { limit: 1000 })).items;
  assert.ok(items.some((i) => i.kind === 'injection'));
  assert.ok(items.some((i) => i.kind === 'checkpoint'));
  const r = await uplink.call<{ acked: number; reported: number }>('outbox-ack', { ids: items.map((i) => i.id) });
  assert.is(r.acked, items.length);
  assert.is(r.reported, 1);
  assert.equal((await uplink.call<{ items: unknown[] }>('outbox-peek', {})).items, []);
  const s = await stats(box.keystore.client('pksctl'));
  assert.is(s[POOL]!.reported, 1);
});

t('LMDB holds no key in clear', async ({ box }) => {
  await box.keystore.client('pksctl').call('stats', {});
  const dir = box.keystore.dataDir;
  const data = Buffer.concat(readdirSync(dir).map((f) => readFileSync(path.join(dir, f))));
  for (const k of [master, ...keys.map((k) => k.key)]) assert.is(data.indexOf(k), -1);
});

t.run();
