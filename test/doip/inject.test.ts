// pks-inject end to end: a real box (vault on SoftHSM, keystore on LMDB, tester API over mTLS)
// and UDS ECU simulators behind a DoIP entity. The library and the CLI inject both carriage
// types, and the failure paths burn the key that left the box and rework the ECU.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { DoipClient } from '../../appliance/doip/client.js';
import type { DoipEntity } from '../../appliance/doip/entity.js';
import { boxClient, type BoxApi } from '../../appliance/inject/box.js';
import { injectEcu } from '../../appliance/inject/inject.js';
import { NRC } from '../../appliance/uds/codec.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor } from '../../appliance/uds/mapping.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { UdsEcu, serveDoip } from '../../scripts/plant/ecu-uds.js';
import { ROOT } from '../../scripts/plant/process.js';
import { runDoipPhase } from '../../scripts/plant/doip-phase.js';
import { startTesterApi, type TesterApiHandle } from '../../scripts/plant/tester-api.js';

const run = promisify(execFile);
const POOLS = [
  { pool: 'oem1.bcm.key4', keyId: 4 },
  { pool: 'oem1.gateway.key5', keyId: 5 },
];
const master = randomBytes(16);
let box: Box;
let api: TesterApiHandle;
let entity: DoipEntity;
let doip: DoipClient;
let tester: BoxApi;
const ecus = new Map<number, UdsEcu>();
const newEcu = (addr: number, pool: string, extra: Partial<ConstructorParameters<typeof UdsEcu>[0]> = {}): UdsEcu => {
  const m = mappingFor(DEFAULT_MAPPING, pool);
  const uid = Buffer.concat([Buffer.from([0x10]), randomBytes(14)]);
  const e = new UdsEcu({ type: m.type, mapping: m, uid, masterKey: master, ...extra });
  ecus.set(addr, e);
  return e;
};

const s = suite('pks-inject: box over mTLS, ECUs over DoIP');
s.before(async () => {
  box = await startBox({ pools: POOLS.map((p) => ({ pool: p.pool, minimum: 1, reorder: 1 })) });
  for (const p of POOLS) await box.importChunks(box.batch(`b-${p.keyId}`, { pool: p.pool, keyId: p.keyId, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys(`k${p.keyId}`, 40) }));
  api = await startTesterApi({
    dir: path.join(box.base, 'tester-api'),
    runDir: box.runDir,
    logDir: box.logDir,
    testers: [{ cn: 'eol-doip-1', station: 'line1-st1', pools: POOLS.map((p) => p.pool) }],
    keystoreAdmin: box.keystore.client('pksctl'),
    vault: box.vault.client('tester-api'),
  });
  const t = api.testers[0]!;
  tester = boxClient({ url: api.url, ca: api.boxCa, cert: t.cert, key: t.key });
  entity = await serveDoip({ identity: { vin: 'WPKS0000000000003', logicalAddress: 0x1000, eid: Buffer.alloc(6, 3), gid: Buffer.alloc(6, 3) }, ecus: (a) => ecus.get(a), tcp: { host: '127.0.0.1', port: 0 } });
  doip = await DoipClient.connect({ host: '127.0.0.1', port: entity.tcpPort!, sourceAddress: 0x0e80 });
  await doip.activate();
});
s.after(async () => {
  doip?.close();
  await entity?.close();
  await tester?.close();
  await api?.stop();
  await box?.stop();
});

const inject = (addr: number, pool: string, attempts = 3) =>
  injectEcu({ box: tester, link: doip.link(addr), pool, mapping: DEFAULT_MAPPING, securitySecret: devSecuritySecret, attempts });

s('both carriage types: the key is in the ECU, the box verified the proof', async () => {
  for (const [addr, p] of [
    [0x1201, POOLS[0]!],
    [0x1202, POOLS[1]!],
  ] as const) {
    const ecu = newEcu(addr, p.pool);
    const r = await inject(addr, p.pool);
    assert.ok(r.ok, JSON.stringify(r));
    assert.ok(r.verified);
    assert.is(r.uid, ecu.uid.toString('hex'));
    assert.is(r.attempts, 1);
    assert.is(r.burned, 0);
    assert.ok(ecu.she.slot(p.keyId), 'slot written');
    for (const k of ['session', 'security', 'uid', 'reserve', 'load', 'confirm']) assert.ok((r.steps as Record<string, number>)[k]! >= 0, k);
  }
});

s('rework: the ECU refuses the load once, the key is burned, a fresh key goes in', async () => {
  const ecu = newEcu(0x1203, POOLS[0]!.pool);
  ecu.faults.nrcOnce = { sid: 0x31, nrc: NRC.conditionsNotCorrect };
  const r = await inject(0x1203, POOLS[0]!.pool);
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(r.attempts, 2);
  assert.is(r.burned, 1);
  const stats = (await box.keystore.client('pksctl').call<{ pools: Record<string, { burned: number }> }>('stats')).pools;
  assert.ok(stats[POOLS[0]!.pool]!.burned >= 1);
});

s('rework: the ECU says nothing to the load (P2 timeout), the key is burned, a fresh key goes in', async () => {
  const ecu = newEcu(0x1204, POOLS[1]!.pool);
  ecu.faults.silentOnce = 0x2e;
  const r = await injectEcu({ box: tester, link: doip.link(0x1204), pool: POOLS[1]!.pool, mapping: DEFAULT_MAPPING, securitySecret: devSecuritySecret });
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(r.burned, 1);
});

s('a proof that does not verify: the box burns the key (PKS_SHE_PROOF_MISMATCH), the result says so', async () => {
  const ecu = newEcu(0x1205, POOLS[0]!.pool);
  ecu.faults.corruptProof = true;
  const r = await inject(0x1205, POOLS[0]!.pool, 1);
  assert.not.ok(r.ok);
  assert.is(r.error?.code, 'PKS_SHE_PROOF_MISMATCH');
  assert.is(r.burned, 1);
});

s('failures before the key leaves the box burn nothing: wrong security secret, unknown ECU type, unknown target', async () => {
  newEcu(0x1206, POOLS[0]!.pool);
  let r = await injectEcu({ box: tester, link: doip.link(0x1206), pool: POOLS[0]!.pool, mapping: DEFAULT_MAPPING, securitySecret: () => Buffer.alloc(16), attempts: 2 });
  assert.not.ok(r.ok);
  assert.is(r.error?.code, 'PKS_UDS_NEGATIVE');
  assert.is(r.burned, 0);
  assert.is(r.packageId, undefined);
  await injectEcu({ box: tester, link: doip.link(0x1206), pool: 'oem1.airbag.key4', mapping: DEFAULT_MAPPING, securitySecret: devSecuritySecret }).then(
    () => assert.unreachable(),
    (e) => assert.is((e as { code: string }).code, 'PKS_UDS_MAPPING_INVALID'),
  );
  r = await inject(0x1999, POOLS[0]!.pool, 1);
  assert.is(r.error?.code, 'PKS_DOIP_NACK');
  assert.is(r.burned, 0);
});

s('the CLI: bin/pks-inject over DoIP, progress on stderr, one JSON result per ECU and a summary', async () => {
  const a = newEcu(0x1301, POOLS[0]!.pool);
  const b = newEcu(0x1302, POOLS[0]!.pool);
  const t = api.testers[0]!;
  const dir = path.join(box.base, 'station');
  await run('mkdir', ['-p', dir]);
  await writeFile(path.join(dir, 'ca.crt'), api.boxCa);
  await writeFile(path.join(dir, 't.crt'), t.cert);
  await writeFile(path.join(dir, 't.key'), t.key, { mode: 0o600 });
  const { stdout, stderr } = await run(
    process.execPath,
    [path.join(ROOT, 'bin/pks-inject.mjs'), '--box', api.url, '--ca', path.join(dir, 'ca.crt'), '--cert', path.join(dir, 't.crt'), '--key', path.join(dir, 't.key'), '--pool', POOLS[0]!.pool, '--doip', `127.0.0.1:${entity.tcpPort}`, '--source', '0x0e81', '--target', '0x1301,0x1302'],
    { cwd: ROOT, timeout: 60_000 },
  );
  const lines = stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.is(lines.length, 3);
  assert.is(lines[0]!.uid, a.uid.toString('hex'));
  assert.is(lines[1]!.uid, b.uid.toString('hex'));
  assert.equal(lines[2], { ecus: 2, injected: 2, failed: 0, burned: 0 });
  assert.match(stderr, /routing active/);
  assert.match(stderr, /ECU 0x1301 uid [0-9a-f]{30}: INJECTED, proof verified/);
  // a target that is not there: exit 1, the failure named
  const bad = await run(process.execPath, [path.join(ROOT, 'bin/pks-inject.mjs'), '--box', api.url, '--ca', path.join(dir, 'ca.crt'), '--cert', path.join(dir, 't.crt'), '--key', path.join(dir, 't.key'), '--pool', POOLS[0]!.pool, '--doip', `127.0.0.1:${entity.tcpPort}`, '--source', '0x0e81', '--target', '0x1399', '--attempts', '1'], { cwd: ROOT, timeout: 60_000 }).then(
    () => undefined,
    (e: { code: number; stderr: string }) => e,
  );
  assert.is(bad?.code, 1);
  assert.match(bad!.stderr, /FAILED PKS_DOIP_NACK/);
});

s("the demo's DoIP phase: a bench of ECUs over one DoIP connection, one reworked", async () => {
  const r = await runDoipPhase({ api, pools: POOLS.map((p) => ({ pool: p.pool, masterKey: master })), ecus: 6, failEvery: 3 });
  assert.equal(r.doip_ecus, 6);
  assert.equal(r.doip_injected, 6);
  assert.equal(r.doip_verified, 6);
  assert.equal(r.doip_burned, 2);
});

s.run();
