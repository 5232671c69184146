// The vault as a service: it fails closed with a coded reason while its HSM token is missing,
// recovers by itself when the token appears, refuses a bad config naming the key, and never
// retries a wrong PIN.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { startService, waitFor } from '../../scripts/plant/process.js';
import { SOFTHSM_MODULE, makeToken } from '../../scripts/plant/vault.js';

const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
};

async function setup(label: string, pin = '1234-user'): Promise<{ dir: string; runDir: string; cfg: string; conf: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-vault-svc-'));
  // a SoftHSM setup that has some other token, not ours
  const other = await makeToken(path.join(dir, 'hsm'), 'someone-else');
  await writeFile(path.join(dir, 'pin'), pin);
  const cfg = path.join(dir, 'vault.json');
  await writeFile(cfg, JSON.stringify({ boxId: 'box-v', hsm: { module: SOFTHSM_MODULE, tokenLabel: label, pinFile: path.join(dir, 'pin'), softhsm2Conf: other.conf } }));
  return { dir, runDir: path.join(dir, 'run'), cfg, conf: other.conf };
}

test('no token: the vault serves its status, refuses every key operation, and recovers when the token appears', async () => {
  const s = await setup('pks-late');
  const proc = startService('vault', { PKS_CONFIG: s.cfg, PKS_RUN_DIR: s.runDir, SOFTHSM2_CONF: s.conf }, s.dir);
  const admin = ipcClient(socketPath('vault', 'pksctl', s.runDir));
  const ks = ipcClient(socketPath('vault', 'keystore', s.runDir));
  try {
    const st = await waitFor('vault socket', () => admin.call<{ ready: boolean; error?: string }>('status'));
    assert.equal([st.ready, st.error], [false, 'PKS_HSM_TOKEN']);
    assert.is(await code(admin.call('public-key', { name: 'audit' })), 'PKS_HSM_TOKEN');
    assert.is(await code(ks.call('audit-checkpoint', { seq: 1, hash: 'ab'.repeat(32), prevSeq: 0, prevHash: '0'.repeat(64), at: new Date().toISOString() })), 'PKS_HSM_TOKEN');
    // plant IT fixes it: the token is there now; the vault picks it up without a restart
    await makeToken(path.join(s.dir, 'hsm'), 'pks-late');
    await waitFor('vault recovered', async () => (await admin.call<{ ready: boolean }>('status')).ready, 20_000, 250);
    const r = await admin.call<{ spki: string }>('public-key', { name: 'audit' });
    assert.ok(Buffer.from(r.spki, 'base64').length > 60);
  } finally {
    await Promise.all([admin.close(), ks.close()]);
    await proc.stop();
    await rm(s.dir, { recursive: true, force: true });
  }
});

test('a wrong PIN fails closed with PKS_HSM_LOGIN and is not retried', async () => {
  const s = await setup('pks-pin', 'wrong-pin-9');
  await makeToken(path.join(s.dir, 'hsm'), 'pks-pin');
  const proc = startService('vault', { PKS_CONFIG: s.cfg, PKS_RUN_DIR: s.runDir, SOFTHSM2_CONF: s.conf }, s.dir);
  const admin = ipcClient(socketPath('vault', 'pksctl', s.runDir));
  try {
    const st = await waitFor('vault socket', () => admin.call<{ ready: boolean; error?: string }>('status'));
    assert.equal([st.ready, st.error], [false, 'PKS_HSM_LOGIN']);
    await new Promise((r) => setTimeout(r, 6000));
    const log = await readFile(proc.logFile, 'utf8');
    assert.is(log.split('\n').filter((l) => l.includes('HSM unavailable')).length, 1, 'one login attempt only');
    assert.not.match(log, 'wrong-pin-9');
  } finally {
    await admin.close();
    await proc.stop();
    await rm(s.dir, { recursive: true, force: true });
  }
});

test('a bad config: the vault refuses to start and names the key', async () => {
  const s = await setup('pks-x');
  await writeFile(s.cfg, JSON.stringify({ boxId: 'box-v', hsm: { module: 'libsofthsm2.so', tokenLabel: 'pks-x' } }));
  const proc = startService('vault', { PKS_CONFIG: s.cfg, PKS_RUN_DIR: s.runDir }, s.dir);
  try {
    assert.is(await proc.exited, 1);
    const log = await readFile(proc.logFile, 'utf8');
    assert.match(log, 'PKS_CONFIG_INVALID');
    assert.match(log, "key 'hsm.module'");
  } finally {
    await rm(s.dir, { recursive: true, force: true });
  }
});

test.run();
