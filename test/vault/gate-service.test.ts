// Issue 12, the application gate on the real parts: swtpm + tpm2-tools for PCR 15 (pks-measure's
// boot measurement and its re-measurement), a temporary application tree, SoftHSM, and the real
// vault process (as pks-vault when run as root) over its sockets. A file changed at run time
// closes every key verb with PKS_TAMPERED within one re-measurement; restoring it reopens the
// vault by itself; a file changed before the boot keeps it closed for that boot; a record or a
// live measurement that is not the vault's and root's keeps it closed.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, sign } from 'node:crypto';
import { chmod, chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { IpcClient } from '../../appliance/ipc.js';
import { signGateRecord } from '../../services/vault/gate.js';
import { waitFor } from '../../scripts/plant/process.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { makeAppTree, type AppTree } from '../attest/app-tree.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';

let tmp = '';
let tpm: Swtpm;
let tree: AppTree;
let liveFile = '';
let vault: VaultHandle | undefined;
const appFile = () => tree.file;
const remeasure = (now?: () => Date) => tree.remeasure(now);

const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'served';
};
type Status = { ready: boolean; gate?: { open: boolean; code?: string; reason?: string } };
const checkpoint = (ks: IpcClient) => ks.call('audit-checkpoint', { seq: 1, hash: 'ab'.repeat(32), prevSeq: 0, prevHash: '0'.repeat(64), at: new Date().toISOString() });
const batchOpen = (ks: IpcClient) => ks.call('batch-open', { batchId: 'b-1', epk: Buffer.alloc(65, 4).toString('base64') });
const gateOf = async (v: VaultHandle) => (await v.client('sentinel').call<Status>('status')).gate;
const until = (v: VaultHandle, open: boolean, ms = 15_000) =>
  waitFor(`gate ${open ? 'open' : 'closed'}`, async () => ((await gateOf(v))?.open === open ? gateOf(v) : false), ms, 100);
/** closed, for the reason `why` (each step waits for its own reason, not the previous one's) */
const closedFor = async (v: VaultHandle, why: string | RegExp): Promise<string> => {
  const g = await waitFor(`gate closed: ${String(why)}`, async () => {
    const x = await gateOf(v);
    return x && !x.open && (typeof why === 'string' ? x.reason === why : why.test(x.reason ?? '')) ? x : false;
  }, 15_000, 100);
  assert.is(g.code, 'PKS_TAMPERED');
  return g.reason!;
};

const boot = () => tree.boot();
async function start(): Promise<VaultHandle> {
  vault = await startVault({ dir: path.join(tmp, 'vault'), runDir: path.join(tmp, 'run'), logDir: tmp, boxId: 'box-gate', gate: { liveFile, everySeconds: 0.3 }, token: vault?.token });
  return vault;
}

test.before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-gate-svc-'));
  tpm = await startSwtpm();
  tree = await makeAppTree(tmp, tpm);
  liveFile = tree.liveFile;
});
test.after(async () => {
  await vault?.stop();
  await tpm?.stop();
  await rm(tmp, { recursive: true, force: true });
});

test('first start records the measurement; a file changed at run time closes every key verb, restoring it reopens the vault', async () => {
  const v = await start();
  const ks = v.client('keystore');
  assert.equal(await until(v, true), { open: true });
  assert.is(await code(checkpoint(ks)), 'served');
  const record = JSON.parse(await readFile(path.join(tmp, 'vault', 'gate-record.json'), 'utf8')) as { trees: { name: string }[] };
  assert.equal(record.trees.map((t) => t.name), ['pks-app', 'pks-config']);

  await writeFile(appFile(), 'serve(); leak()\n');
  await remeasure();
  const closed = await until(v, false);
  assert.is(closed?.code, 'PKS_TAMPERED');
  assert.is(closed?.reason, 'pks-app differs from the provisioned measurement');
  assert.is(await code(checkpoint(ks)), 'PKS_TAMPERED');
  assert.is(await code(batchOpen(ks)), 'PKS_TAMPERED');
  assert.is(await code(v.client('unlock').call('unlock-public-key', { key: 'user-ca' })), 'served', 'public keys stay readable');
  assert.is(await code(v.client('pksctl').call('ecu-ca-certificate', {})), 'PKS_NOT_FOUND', 'no ECU CA here: refused before the gate');
  // public keys are public: ops can still see which box this is
  assert.is(await code(v.client('pksctl').call('public-key', { name: 'identity' })), 'served');

  await writeFile(appFile(), 'serve()\n');
  await remeasure();
  assert.equal(await until(v, true), { open: true });
  assert.is(await code(checkpoint(ks)), 'served');
});

test('a restart keeps the record; a stale or foreign live measurement closes the gate', async () => {
  await vault!.stop();
  const before = await readFile(path.join(tmp, 'vault', 'gate-record.json'), 'utf8');
  await remeasure();
  const v = await start();
  assert.equal(await until(v, true), { open: true });
  assert.is(await readFile(path.join(tmp, 'vault', 'gate-record.json'), 'utf8'), before, 'not re-recorded on a later start');
  // the re-measure timer stopped: a measurement older than maxAgeSeconds counts as none
  await remeasure(() => new Date(Date.now() - 10 * 60_000));
  await closedFor(v, /stale/);
  // a measurement someone else wrote (a service user, not root) is not taken
  await remeasure();
  await chown(liveFile, 65534, 65534);
  await closedFor(v, /not written by pks-measure alone/);
  await chown(liveFile, 0, 0);
  assert.equal(await until(v, true), { open: true });
  await chmod(liveFile, 0o666);
  await closedFor(v, /not written by pks-measure alone/);
  await chmod(liveFile, 0o644);
  assert.equal(await until(v, true), { open: true });
});

test('a record not signed by this vault, or none, keeps it closed; a file changed before the boot closes it for that boot', async () => {
  const v = vault!;
  const recordFile = path.join(tmp, 'vault', 'gate-record.json');
  const genuine = await readFile(recordFile, 'utf8');
  const r = JSON.parse(genuine) as { pcr15: string; trees: { name: string; digest: string }[] };
  // whoever can write the vault's state directory records a tampered tree with a key of his own
  const attacker = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  await writeFile(appFile(), 'evil()\n');
  const evil = await remeasure();
  await writeFile(recordFile, JSON.stringify(signGateRecord(r.pcr15, evil.trees, new Date(), (d) => sign('sha256', d, { key: attacker.privateKey, dsaEncoding: 'ieee-p1363' }))));
  await closedFor(v, 'gate record is not signed by this vault');
  await rm(recordFile);
  await closedFor(v, 'no provisioned gate record');
  await writeFile(recordFile, genuine);
  await writeFile(appFile(), 'serve()\n');
  await remeasure();
  assert.equal(await until(v, true), { open: true });

  // changed before the boot: PCR 15 is wrong for the whole boot, restoring the file is not enough
  await tpm.restart();
  await writeFile(appFile(), 'evil()\n');
  await boot();
  await closedFor(v, 'PCR 15 of this boot differs from the provisioned value');
  await writeFile(appFile(), 'serve()\n');
  await remeasure();
  await new Promise((res) => setTimeout(res, 1000));
  assert.is((await gateOf(v))?.reason, 'PCR 15 of this boot differs from the provisioned value');
  await tpm.restart();
  await boot();
  assert.equal(await until(v, true), { open: true });
});

test.run();
