// Caller separation as it runs on the box (issue 9, item 8): as root, the vault runs as
// pks-vault with its pair groups and puts each caller's socket in pks-vault-<caller>, 0660.
// Processes under the other services' users then prove what the kernel allows: the tester
// API's user cannot connect to the uplink's vault socket (nor the keystore's, nor anyone to a
// socket not theirs), each caller reaches its own.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { socketPath } from '../../appliance/paths.js';
import { makeKmsPki, startKeystore, type KeystoreHandle } from '../../scripts/plant/keystore.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { ensureServiceUsers, groupId, separateUsers, serviceUser } from '../../scripts/plant/users.js';

const enabled = separateUsers();
if (!enabled) console.log('SKIP vault separation: needs root to run services under their own users');
const maybe = enabled ? test : test.skip;

let dir = '';
let vault: VaultHandle | undefined;
let keystore: KeystoreHandle | undefined;
const runDir = () => path.join(dir, 'run');

test.before(async () => {
  if (!enabled) return;
  ensureServiceUsers();
  dir = mkdtempSync(path.join(os.tmpdir(), 'pks-separation-'));
  vault = await startVault({ dir: path.join(dir, 'vault'), runDir: runDir(), logDir: dir, boxId: 'box-sep', separate: true });
  const kms = await makeKmsPki(path.join(dir, 'kms'));
  keystore = await startKeystore({ dir: path.join(dir, 'keystore'), runDir: runDir(), logDir: dir, boxId: 'box-sep', kmsCa: kms.caCert, pools: [{ pool: 'oem1.bcm.key4', minimum: 0, reorder: 1 }], separate: true });
});
test.after(async () => {
  await keystore?.stop();
  await vault?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Connects to `sock` as the service's user (with its supplementary groups): 'connected' or the errno. */
function connectAs(service: string, sock: string): string {
  const u = serviceUser(service);
  const js = `require('net').connect(${JSON.stringify(sock)}).on('connect',function(){process.stdout.write('connected');this.destroy()}).on('error',(e)=>process.stdout.write(e.code))`;
  const r = spawnSync('setpriv', ['--reuid', String(u.uid), '--regid', String(u.gid), '--init-groups', '--', process.execPath, '-e', js], { encoding: 'utf8', timeout: 10_000 });
  return r.stdout.trim() || `exit ${r.status}: ${r.stderr}`;
}

maybe('the vault runs as pks-vault, each caller socket is pks-vault-<caller> 0660', () => {
  const status = readFileSync(`/proc/${vault!.proc.child.pid}/status`, 'utf8');
  const uid = /^Uid:\s+(\d+)/m.exec(status)![1];
  assert.is(Number(uid), serviceUser('vault').uid, 'vault not under its own user');
  for (const caller of ['keystore', 'tester-api', 'uplink', 'sentinel']) {
    const st = statSync(socketPath('vault', caller, runDir()));
    assert.is(st.gid, groupId(`pks-vault-${caller}`), `group of ${caller}.sock`);
    assert.is(st.mode & 0o777, 0o660, `mode of ${caller}.sock`);
  }
});

maybe("the tester API's user cannot connect to the uplink's vault socket; each caller reaches its own", () => {
  const sock = (caller: string) => socketPath('vault', caller, runDir());
  assert.is(connectAs('tester-api', sock('uplink')), 'EACCES');
  assert.is(connectAs('tester-api', sock('keystore')), 'EACCES');
  assert.is(connectAs('uplink', sock('tester-api')), 'EACCES');
  assert.is(connectAs('sentinel', sock('uplink')), 'EACCES');
  for (const caller of ['keystore', 'tester-api', 'uplink', 'sentinel']) assert.is(connectAs(caller, sock(caller)), 'connected', caller);
});

maybe('the keystore as pks-keystore: its callers reach only their own sockets, and it reaches its vault socket', async () => {
  const sock = (caller: string) => socketPath('keystore', caller, runDir());
  assert.is(connectAs('tester-api', sock('uplink')), 'EACCES');
  assert.is(connectAs('uplink', sock('tester-api')), 'EACCES');
  for (const caller of ['tester-api', 'uplink', 'sentinel']) assert.is(connectAs(caller, sock(caller)), 'connected', caller);
  // the keystore itself works through its own vault socket (pks-vault-keystore)
  const stats = await keystore!.client('pksctl').call<{ pools: Record<string, unknown> }>('stats');
  assert.ok(stats.pools['oem1.bcm.key4']);
});

test.run();
