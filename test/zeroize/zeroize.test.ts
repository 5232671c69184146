// Issue 16 §3 with real parts: mosquitto with TLS and its CRL, the reference KMS, vault on a
// SoftHSM token, keystore on LMDB, uplink. rotate-cert gets the old certificate revoked and the
// broker refuses it after the reload; `pksctl zeroize` refuses (and changes nothing) while the
// KMS is unreachable or the name typed is wrong; a zeroize killed with SIGKILL mid-way completes
// when run again: no key object left on the token, no LMDB data, no credentials, the box
// decommissioned at the KMS and its certificates refused by the broker.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { ROOT, waitFor } from '../../scripts/plant/process.js';
import { brokerTakes, pksctl, serialOf, startRig, tokenObjects, type Rig } from './rig.js';

const BOX = 'box-plant9-01';
let rig: Rig;
let journal: string;
let args: string[];
/** the box's certificate after rotate-cert (read from the uplink's state before the wipe) */
let current: { cert: string; key: string };

test.before(async () => {
  rig = await startRig(BOX);
  journal = path.join(rig.base, 'zeroize.json');
  args = ['zeroize', '--journal', journal, '--data', rig.box.keystore.dataDir, '--credentials', rig.upDir];
});
test.after(async () => {
  await rig?.stop();
});

type Revoked = { serial: string; boxId: string; reason: string };
const revoked = async (): Promise<Revoked[]> => (await rig.kms.fleet.call<{ revoked: Revoked[] }>('crl')).revoked;
const uplinkConnected = async (): Promise<boolean> => {
  const c = ipcClient(socketPath('uplink', 'pksctl', rig.box.runDir), { timeoutMs: 5000 });
  try {
    return (await c.call<{ connected: boolean }>('status')).connected;
  } finally {
    await c.close();
  }
};

test('rotate-cert: the replaced certificate is revoked, the broker refuses it after the CRL reload', async () => {
  assert.ok(await brokerTakes(rig.broker, rig.mqttCert, rig.mqttKey), 'the setup certificate works before');
  await rig.command('rotate-cert');
  const old = serialOf(rig.mqttCert);
  await waitFor('old serial revoked at the KMS', async () => (await revoked()).some((r) => r.serial === old && r.boxId === BOX), 30_000, 300);
  assert.match(readFileSync(rig.broker.crlFile, 'utf8'), /BEGIN X509 CRL/);
  await waitFor('broker refuses the old certificate', async () => !(await brokerTakes(rig.broker, rig.mqttCert, rig.mqttKey)), 15_000, 300);
  // the box itself goes on with its new certificate; another certificate of the same CA is fine
  await waitFor('uplink connected with the new certificate', uplinkConnected, 20_000, 300);
  const id = (JSON.parse(readFileSync(path.join(rig.upDir, 'state', 'uplink-state.json'), 'utf8')) as { identity: { certFile: string; keyFile: string } }).identity;
  current = { cert: readFileSync(id.certFile, 'utf8'), key: readFileSync(id.keyFile, 'utf8') };
  assert.ok(serialOf(current.cert) !== old);
  const other = await rig.broker.clientCert('box-plant9-77');
  assert.ok(await brokerTakes(rig.broker, readFileSync(other.cert, 'utf8'), readFileSync(other.key, 'utf8')));
});

test('zeroize refuses, changing nothing: wrong name typed; KMS unreachable without --force', async () => {
  const keys = (await tokenObjects(rig.box)).keys;
  assert.ok(keys >= 5, `key objects before: ${keys}`);
  const data = await readdir(rig.box.keystore.dataDir);
  const wrong = await pksctl(rig.box, args, 'box-plant9-02\n');
  assert.is.not(wrong.code, 0);
  assert.match(wrong.err, /PKS_ZEROIZE_UNCONFIRMED/);
  await rig.kms.stop();
  try {
    const r = await pksctl(rig.box, [...args, '--yes', '--timeout', '3']);
    assert.is.not(r.code, 0);
    assert.match(r.err, /PKS_ZEROIZE_REFUSED/);
  } finally {
    await rig.kms.restart();
  }
  assert.is((await tokenObjects(rig.box)).keys, keys);
  assert.equal((await readdir(rig.box.keystore.dataDir)).sort(), data.sort());
  assert.ok(existsSync(path.join(rig.upDir, 'mqtt-client.key')));
  const st = await rig.box.vault.client('pksctl').call<{ ready: boolean }>('status');
  assert.ok(st.ready);
  assert.ok(((await rig.box.keystore.client('pksctl').call<{ pools: Record<string, { available: number }> }>('stats')).pools['oem1.bcm.key4']?.available ?? 0) > 0);
});

test('zeroize killed with SIGKILL mid-way, run again: keys, data and credentials gone, box revoked', async () => {
  // typed confirmation, killed as soon as its journal exists (inside the final sync)
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'pksctl.mjs'), ...args], { env: { ...process.env, PKS_RUN_DIR: rig.box.runDir }, stdio: ['pipe', 'ignore', 'ignore'] });
  child.stdin.end(`${BOX}\n`);
  await waitFor('zeroize journal', async () => existsSync(journal) || child.exitCode !== null, 30_000, 5);
  child.kill('SIGKILL');
  await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r)));
  const r = await pksctl(rig.box, [...args, '--yes', '--json']);
  assert.is(r.code, 0, r.err);
  const res = JSON.parse(r.out.trim().split('\n').pop()!) as { zeroized: boolean; steps: string[] };
  assert.ok(res.zeroized);
  assert.equal(res.steps, ['final-sync', 'hsm', 'wipe', 'report']);
  // nothing of the HSM keys, the LMDB store or the credentials is left
  assert.is((await tokenObjects(rig.box)).keys, 0);
  assert.equal(await readdir(rig.box.keystore.dataDir), []);
  assert.ok(!existsSync(path.join(rig.upDir, 'mqtt-client.key')));
  // the vault fails closed and makes no new hierarchy on the zeroized token
  const st = await rig.box.vault.client('pksctl').call<{ ready: boolean; error?: string }>('status');
  assert.is(st.ready, false);
  assert.is(st.error, 'PKS_DECOMMISSIONED');
  // the KMS took the final records, then the report: decommissioned, certificates revoked
  const b = await waitFor('decommissioned at the KMS', async () => {
    const x = await rig.kms.fleet.call<{ decommissioned?: { at: string }; lastCheckpoint: { seq: number } | null }>('box', { boxId: BOX });
    return x.decommissioned ? x : undefined;
  }, 20_000, 300);
  assert.ok(b.lastCheckpoint && b.lastCheckpoint.seq >= 1, 'the final checkpoint reached the KMS');
  const rv = await revoked();
  assert.ok(rv.filter((x) => x.boxId === BOX).length >= 2, JSON.stringify(rv));
  assert.ok(rv.some((x) => x.serial === serialOf(current.cert)), 'the current certificate is revoked');
  await waitFor('broker refuses the box certificate', async () => !(await brokerTakes(rig.broker, current.cert, current.key)), 15_000, 300);
  // ops' own hand at the KMS (pks-fleet decommission) is the same decommissioning, again harmless
  const byHand = await rig.kms.fleet.call<{ revoked: string[] }>('decommission', { boxId: BOX, reason: 'test' });
  assert.ok(byHand.revoked.includes(serialOf(current.cert)));
  // a third run changes nothing and says so
  const again = await pksctl(rig.box, [...args, '--yes', '--json']);
  assert.is(again.code, 0, again.err);
  assert.is((await tokenObjects(rig.box)).keys, 0);
});

test.run();
