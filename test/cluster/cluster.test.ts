// Issue 16 §2: a plant with two boxes (real mosquitto with TLS, the reference KMS, two full
// appliances on SoftHSM + LMDB). Testers use the tester library's cluster client. One box is
// killed mid-shift (SIGKILL of its keystore: its tester API answers coded 503s), later the other
// (SIGKILL of its tester API: connection failures); the stations fail over each time. At the end:
// no package for two ECUs, no ECU slot with two injected keys at the KMS, every key that left a
// box on record at the KMS exactly once (none lost), both audits verify. Also: the ECU-proof rule
// for a box that dies between the ECU's proof and the confirm, and rebalancing by signed command.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { clusterClient } from '../../appliance/inject/cluster.js';
import { signCommand } from '../../appliance/contracts/commands.js';
import { startBroker, type TestBroker } from '../../scripts/plant/broker.js';
import { checkCluster, runShift, startMember, stats, type ClusterMember } from '../../scripts/plant/cluster.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { startKms, type TestKms } from '../../scripts/plant/kms.js';
import { waitFor } from '../../scripts/plant/process.js';

const POOL = 'oem1.bcm.key4';
const masterKey = randomBytes(16);
let base: string;
let broker: TestBroker;
let kms: TestKms;
let A: ClusterMember;
let B: ClusterMember;
type Item = { boxId: string; state: string; uid: string | null; pool: string; recordId: string; reason: string | null };
const report = async (): Promise<Item[]> => (await kms.fleet.call<{ items: Item[] }>('report', { limit: 100_000 })).items;

test.before(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), 'pks-cluster-'));
  broker = await startBroker();
  kms = await startKms(broker, path.join(base, 'kms'), { signer: 'keyfile' });
  const oem = path.join(base, 'oem.json');
  await writeFile(oem, JSON.stringify({ v: 1, oem: 'oem1', pools: [{ pool: POOL, she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0 }, authKey: masterKey.toString('hex'), generate: 2000 }] }));
  await kms.fleet.call('import-oem', { path: oem });
  const testers = Array.from({ length: 4 }, (_, i) => ({ cn: `eol-c${i + 1}`, station: `line7-st${i + 1}`, pools: [POOL] }));
  const pools = [{ pool: POOL, minimum: 20, reorder: 60 }];
  A = await startMember({ base, boxId: 'box-plant7-01', plant: 'plant7', broker, kms, pools, testers });
  B = await startMember({ base, boxId: 'box-plant7-02', plant: 'plant7', broker, kms, pools, testers, pkiDir: path.join(base, 'box-plant7-01', 'tester-api', 'pki') });
  await waitFor('first stock on both boxes', async () => (await stats(A))[POOL]!.available >= 60 && (await stats(B))[POOL]!.available >= 60, 60_000, 200);
});

test.after(async () => {
  await B?.stop();
  await A?.stop();
  await kms?.stop();
  await broker?.stop();
  if (!process.env.PKS_KEEP_TMP) await rm(base, { recursive: true, force: true });
});

test('one plant view at the KMS: both boxes, their stock summed', async () => {
  await waitFor('status of both boxes', async () => {
    const p = await kms.fleet.call<{ boxes: { boxId: string }[]; stock: Record<string, { available: number; boxes: Record<string, number> }> }>('plant', { plant: 'plant7' });
    return p.boxes.length === 2 && Object.keys(p.stock[POOL]?.boxes ?? {}).length === 2;
  }, 20_000, 300);
  const p = await kms.fleet.call<{ boxes: { boxId: string; plant: string }[]; stock: Record<string, { available: number }> }>('plant', { plant: 'plant7' });
  assert.equal(p.boxes.map((b) => b.boxId).sort(), ['box-plant7-01', 'box-plant7-02']);
  assert.ok(p.stock[POOL]!.available >= 120);
});

test('box A dies between the ECU proof and the confirm: the proof decides, one key per ECU slot', async () => {
  const t = A.api.testers[0]!;
  const cc = clusterClient([A, B].map((m) => ({ boxId: m.boxId, url: m.api.url, ca: m.api.boxCa, cert: t.cert, key: t.key, timeoutMs: 5000 })));
  const uid1 = Buffer.from('30' + randomBytes(14).toString('hex'), 'hex');
  const uid2 = Buffer.from('31' + randomBytes(14).toString('hex'), 'hex');
  const ecu1 = new SheEcu(uid1, masterKey);
  const ecu2 = new SheEcu(uid2, masterKey);
  const p1 = await cc.reserve(POOL, uid1.toString('hex'));
  const p2 = await cc.reserve(POOL, uid2.toString('hex')); // reserved on A, never loaded
  assert.is(cc.current(), A.boxId);
  const proof1 = ecu1.loadKey(Buffer.from(p1.m1, 'hex'), Buffer.from(p1.m2, 'hex'), Buffer.from(p1.m3, 'hex'));
  await A.api.proc.kill9();
  // the confirm cannot reach A: the ECU holds A's key, its proof goes to the KMS through B
  const c1 = await cc.confirm(p1.packageId, proof1.m4, proof1.m5);
  assert.is(c1.state, 'RELAYED');
  assert.is(cc.current(), B.boxId);
  // ECU 2 was only reserved on A: the retry gets B's key, which loads and is confirmed on B
  const q2 = await cc.reserve(POOL, uid2.toString('hex'));
  assert.ok(q2.packageId !== p2.packageId);
  const proof2 = ecu2.loadKey(Buffer.from(q2.m1, 'hex'), Buffer.from(q2.m2, 'hex'), Buffer.from(q2.m3, 'hex'));
  assert.is((await cc.confirm(q2.packageId, proof2.m4, proof2.m5)).state, 'INJECTED');
  // a confused station asking B for ECU 1 as well: the SHE refuses B's key (its counter is not
  // above the one A's key came with), the key is burned; nothing stands beside A's key
  const q1 = await cc.reserve(POOL, uid1.toString('hex'));
  assert.throws(() => ecu1.loadKey(Buffer.from(q1.m1, 'hex'), Buffer.from(q1.m2, 'hex'), Buffer.from(q1.m3, 'hex')));
  assert.is((await cc.fail(q1.packageId, 'ECU refused the update')).state, 'BURNED');
  await cc.close();
  await A.api.restart();
  // A's sweep burns both of its keys and reports them; the KMS keeps the proven one as injected
  await waitFor('A swept and reported', async () => {
    const items = await report();
    const a1 = items.find((i) => i.recordId === p1.packageId);
    const a2 = items.find((i) => i.recordId === p2.packageId);
    return a1?.state === 'VERIFIED' && a2?.state === 'BURNED' && (await stats(A))[POOL]!.reserved === 0;
  }, 60_000, 300);
  const items = await report();
  const verifiedFor = (uid: Buffer) => items.filter((i) => i.state === 'VERIFIED' && i.uid === uid.toString('hex'));
  assert.equal(verifiedFor(uid1).map((i) => [i.boxId, i.recordId]), [[A.boxId, p1.packageId]]);
  assert.equal(verifiedFor(uid2).map((i) => [i.boxId, i.recordId]), [[B.boxId, q2.packageId]]);
  assert.is(items.find((i) => i.recordId === q1.packageId)?.state, 'BURNED');
  assert.is(items.find((i) => i.recordId === p2.packageId)?.boxId, A.boxId);
});

test('a shift with a box killed mid-shift, then the other: testers fail over, 0 duplicates, 0 lost, audits verify', async () => {
  const ecus = 60;
  const before = (await report()).filter((i) => i.state === 'VERIFIED').length;
  const r = await runShift({
    members: [A, B],
    pools: [{ pool: POOL, masterKey }],
    ecus,
    stations: 4,
    events: [
      { at: 15, run: () => A.box.keystore.proc.kill9() },
      {
        at: 35,
        run: async () => {
          await A.box.keystore.restart();
          await B.api.proc.kill9();
        },
      },
    ],
  });
  await B.api.restart();
  assert.is(r.injected, ecus);
  assert.is(r.duplicates, 0);
  // the stations on A move at the first kill, then all of them move back at the second
  assert.ok(r.failovers >= 4, `failovers: ${r.failovers}`);
  // both kinds: A's tester API answered coded 503s without its keystore, B's did not answer at all
  assert.ok(r.failoverWhy.connection! > 0 && Object.keys(r.failoverWhy).some((k) => k !== 'connection'), JSON.stringify(r.failoverWhy));
  const c = await checkCluster(kms, [A, B], before + ecus);
  assert.is(c.reserved, 0, 'no reservation left open');
  assert.is(c.onRecord, c.out, `every key that left a box is on record at the KMS (${c.onRecord} of ${c.out})`);
  assert.is(c.kmsVerified, before + ecus);
  assert.is(c.doubleSlots, 0);
  assert.equal(c.auditOk, [true, true]);
});

test('rebalancing: a signed release-stock moves stock from A to B; released keys are never live again', async () => {
  const opsKey = await readFile(path.join(A.upDir, 'ops.key'), 'utf8');
  let seq = Date.now();
  const command = async (command: 'set-quota' | 'release-stock', args: Record<string, unknown>): Promise<void> => {
    const s = ++seq;
    await kms.fleet.call('send-command', { boxId: A.boxId, command: signCommand({ v: 1, seq: s, expiresAt: new Date(Date.now() + 60_000).toISOString(), boxId: A.boxId, command, args }, opsKey) });
    await waitFor(`${command} done on A`, async () => (await kms.fleet.call<{ cmdResults: { seq: number; ok: boolean }[] }>('box', { boxId: A.boxId })).cmdResults.some((c) => c.seq === s && c.ok), 20_000, 200);
  };
  // ops lowers A's minimum with the release, or A would re-order what it gives away
  await command('set-quota', { pool: POOL, minimum: 0, reorder: 60 });
  const a0 = (await stats(A))[POOL]!;
  const b0 = (await stats(B))[POOL]!;
  await command('release-stock', { pool: POOL, count: 10, to: B.boxId });
  await waitFor('B got fresh stock for the released keys', async () => (await stats(B))[POOL]!.available >= b0.available + 10, 30_000, 200);
  const a1 = (await stats(A))[POOL]!;
  // out of A's stock for good (counted burned); a re-order A had in flight may still land
  assert.is(a1.burned - a0.burned, 10, `A burned: ${a0.burned} → ${a1.burned}`);
  const items = await report();
  const released = items.filter((i) => i.state === 'RELEASED');
  assert.is(released.length, 10);
  assert.ok(released.every((i) => i.boxId === A.boxId && /released to box-plant7-02/.test(i.reason ?? '')));
  // B's new keys are other keys: a released record id never appears for another box
  const ids = new Set(released.map((i) => i.recordId));
  assert.ok(!items.some((i) => ids.has(i.recordId) && i.state !== 'RELEASED'));
  // a release to a box outside the plant is refused at the KMS: the keys stay out of A, go nowhere
  const box = await kms.fleet.call<{ counters: { rejected: number } }>('box', { boxId: A.boxId });
  assert.is(box.counters.rejected, 0);
});

test.run();
