// pksctl against a running box: manual import of a batch file, and `audit verify` finding a
// tampered entry; the SHE ECU simulator's own refusals.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { sheMessages, SHE_FLAG } from '../../appliance/she.js';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { ROOT } from '../../scripts/plant/process.js';
import { openDbs } from '../../services/keystore/db.js';

const run = promisify(execFile);
const POOL = 'oem2.abs.key6';

async function pksctl(box: Box, args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await run(process.execPath, [path.join(ROOT, 'bin', 'pksctl.mjs'), ...args], { env: { ...process.env, PKS_RUN_DIR: box.runDir, }, timeout: 60_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, out: x.stdout, err: x.stderr };
  }
}

const cli = suite<{ box: Box }>('pksctl import and audit verify');
cli.before(async (ctx) => {
  ctx.box = await startBox({ pools: [{ pool: POOL, minimum: 1, reorder: 10 }], checkpointEvery: 3 });
});
cli.after(async (ctx) => {
  await ctx.box?.stop();
});

cli('pksctl import takes a batch file; a tampered file is refused and changes nothing', async ({ box }) => {
  const chunks = box.batch('manual-1', { pool: POOL, keyId: 6, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys: randomSheKeys('m1', 30) }, 10);
  const file = path.join(box.base, 'batch.jsonl');
  await writeFile(file, chunks.map((c) => JSON.stringify(c)).join('\n') + '\n');
  const ok = await pksctl(box, ['import', file, '--json']);
  assert.is(ok.code, 0, ok.err);
  assert.equal(JSON.parse(ok.out), { batches: [{ batchId: 'manual-1', pool: POOL, imported: 30, complete: true, missing: [] }] });

  const bad = box.batch('manual-2', { pool: POOL, keyId: 6, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys: randomSheKeys('m2', 5) })[0]!;
  await writeFile(file, JSON.stringify({ ...bad, payload: bad.payload.replace('"total":5', '"total":6') }) + '\n');
  const refused = await pksctl(box, ['import', file]);
  assert.is(refused.code, 2);
  assert.match(refused.err, 'PKS_BATCH_SIGNATURE');
  const missing = await pksctl(box, ['import', path.join(box.base, 'nope.jsonl')]);
  assert.match(missing.err, 'PKS_NOT_FOUND');
  const stats = await box.keystore.client('pksctl').call<{ pools: Record<string, { available: number }> }>('stats');
  assert.is(stats.pools[POOL]!.available, 30);
});

cli('pksctl tester, pool and stock: plant IT manages testers and quotas; bad arguments are refused', async ({ box }) => {
  const add = await pksctl(box, ['tester', 'add', 'eol-7', '--station', 'line2-st7', '--pools', POOL, '--expires', '2030-01-01']);
  assert.is(add.code, 0, add.err);
  const list = JSON.parse((await pksctl(box, ['tester', 'list', '--json'])).out) as { items: { cn: string; revoked: boolean; station: string }[] };
  assert.equal(list.items.find((t) => t.cn === 'eol-7'), { cn: 'eol-7', station: 'line2-st7', pools: [POOL], expiresAt: '2030-01-01T00:00:00.000Z', revoked: false });
  assert.is((await pksctl(box, ['tester', 'revoke', 'eol-7'])).code, 0);
  const after = JSON.parse((await pksctl(box, ['tester', 'list', '--json'])).out) as { items: { cn: string; revoked: boolean }[] };
  assert.is(after.items.find((t) => t.cn === 'eol-7')!.revoked, true);
  assert.is((await pksctl(box, ['pool', 'set', POOL, '--minimum', '7', '--reorder', '70'])).code, 0);
  const stock = JSON.parse((await pksctl(box, ['stock', '--json'])).out) as { pools: Record<string, { minimum: number; reorder: number }> };
  assert.equal([stock.pools[POOL]!.minimum, stock.pools[POOL]!.reorder], [7, 70]);
  for (const bad of [
    ['tester', 'add', 'x'],
    ['tester', 'add', 'x', '--station', 's', '--pools', POOL, '--expires', 'soon'],
    ['pool', 'set', POOL, '--minimum', '-1', '--reorder', '1'],
    ['pool', 'set', 'not a pool', '--minimum', '1', '--reorder', '1'],
    ['stock', '--bogus'],
  ]) {
    const r = await pksctl(box, bad);
    assert.is(r.code, 2, bad.join(' '));
    assert.match(r.err, 'PKS_BAD_REQUEST');
  }
  assert.match((await pksctl(box, ['tester', 'revoke', 'nobody'])).err, 'PKS_TESTER_UNKNOWN');
});

cli('pksctl handover moves an open reservation to a rework station, audited; the line tester then gets a conflict', async ({ box }) => {
  const admin = box.keystore.client('pksctl');
  const t = box.keystore.client('tester-api');
  for (const cn of ['line-h', 'rework-h']) await admin.call('tester-put', { cn, station: `st-${cn}`, pools: [POOL], expiresAt: '2099-01-01T00:00:00.000Z', revoked: false });
  const u = (0x900).toString(16).padStart(30, '0');
  const p = await t.call<{ packageId: string }>('reserve', { pool: POOL, uid: u, tester: 'line-h', station: 'st-line-h' });
  const bad = await pksctl(box, ['handover', '--pool', POOL, '--uid', u, '--to', 'nobody', '--reason', 'rework']);
  assert.ok(bad.code !== 0 && /PKS_TESTER_UNKNOWN/.test(bad.err), bad.err);
  assert.match((await pksctl(box, ['handover', '--to', 'rework-h'])).err, 'PKS_BAD_REQUEST');
  const ok = await pksctl(box, ['handover', '--pool', POOL, '--uid', u.toUpperCase(), '--to', 'rework-h', '--reason', 'ECU to rework', '--json']);
  assert.is(ok.code, 0, ok.err);
  assert.equal(JSON.parse(ok.out), { packageId: p.packageId, tester: 'rework-h', station: 'st-rework-h' });
  const again = await t.call<{ packageId: string; reused: boolean }>('reserve', { pool: POOL, uid: u, tester: 'rework-h', station: 'st-rework-h' });
  assert.equal([again.packageId, again.reused], [p.packageId, true]);
  let conflict = '';
  await t.call('reserve', { pool: POOL, uid: u, tester: 'line-h', station: 'st-line-h' }).catch((e: { code: string }) => (conflict = e.code));
  assert.is(conflict, 'PKS_RESERVED_BY_OTHER');
});

cli('pksctl audit verify: intact but NOT VERIFIED without a KMS anchor, then BROKEN after an entry is edited', async ({ box }) => {
  const t = box.keystore.client('tester-api');
  await box.registerTesters(['cli'], [POOL]);
  for (let i = 1; i <= 4; i++) await t.call('reserve', { pool: POOL, uid: (0x500 + i).toString(16).padStart(30, '0'), tester: 'cli' });
  await box.keystore.client('uplink').call('checkpoint', {});
  const ok = await pksctl(box, ['audit', 'verify', '--data', box.keystore.dataDir, '--kms-ca', box.kms.caCert, '--json']);
  // signed by the box's own key only: intact, but nothing the KMS acknowledged (issue 9)
  assert.is(ok.code, 3, ok.err);
  const r = JSON.parse(ok.out) as { ok: boolean; verified: boolean; checkpoints: number; unsignedTail: number; notAnchored: number; headSeq: number };
  assert.ok(r.ok && r.checkpoints >= 1);
  assert.is(r.verified, false);
  assert.is(r.unsignedTail, 0);
  assert.is(r.notAnchored, r.headSeq);

  await box.keystore.proc.stop();
  const dbs = openDbs(box.keystore.dataDir);
  const e = dbs.audit.get(3)!;
  await dbs.audit.put(3, { ...e, line: e.line.replace('"seq":3', '"seq":3,"x":1') });
  await dbs.root.close();
  const broken = await pksctl(box, ['audit', 'verify', '--data', box.keystore.dataDir, '--kms-ca', box.kms.caCert]);
  assert.is(broken.code, 1);
  assert.match(broken.out, 'BROKEN');
  assert.match(broken.out, 'entry 3 was edited');
  await box.keystore.restart();
});
cli.run();

const sim = suite('SHE ECU simulator');
const uid = Buffer.from('000000000000000000000000000abc', 'hex');
const master = randomBytes(16);
const upd = (over: Partial<Parameters<typeof sheMessages>[0]> = {}) => sheMessages({ uid, keyId: 4, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0, ...over });

sim('loads a good package and answers the proof the vault expects', () => {
  const ecu = new SheEcu(uid, master);
  const m = upd();
  assert.equal(ecu.loadKey(m.m1, m.m2, m.m3), { m4: m.m4, m5: m.m5 });
});

sim('refuses another ECU, a wrong auth key, a stale counter and a write-protected slot', () => {
  const ecu = new SheEcu(uid, master);
  const other = sheMessages({ uid: Buffer.from('000000000000000000000000000abd', 'hex'), keyId: 4, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0 });
  assert.throws(() => ecu.loadKey(other.m1, other.m2, other.m3), /UID does not match/);
  const wrongAuth = upd({ authKey: randomBytes(16) });
  assert.throws(() => ecu.loadKey(wrongAuth.m1, wrongAuth.m2, wrongAuth.m3), /M3 does not verify/);
  const first = upd({ counter: 5, flags: SHE_FLAG.WRITE_PROT });
  ecu.loadKey(first.m1, first.m2, first.m3);
  const again = upd({ counter: 6 });
  assert.throws(() => ecu.loadKey(again.m1, again.m2, again.m3), /write-protected/);
  const ecu2 = new SheEcu(uid, master);
  const a = upd({ counter: 5 });
  ecu2.loadKey(a.m1, a.m2, a.m3);
  const stale = upd({ counter: 5 });
  assert.throws(() => ecu2.loadKey(stale.m1, stale.m2, stale.m3), /counter 5 not above 5/);
  const slot2 = upd({ keyId: 5, authKeyId: 6 });
  assert.throws(() => ecu2.loadKey(slot2.m1, slot2.m2, slot2.m3), /auth key not allowed/);
});
sim.run();
