// Signed bundles through the real RAUC 1.8: `rauc service` on a private D-Bus, file-backed A/B
// slots, our bootchooser on a directory ESP, our pre-install handler against a swtpm floor.
// Every refusal leaves the other slot as it was and the boot entries untouched.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync, truncateSync, writeFileSync, openSync, writeSync, closeSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isPksError } from '../../appliance/errors.js';
import { inspectBundle } from '../../services/updater/bundle.js';
import { raiseFloor, readFloor } from '../../services/updater/floor.js';
import { raucInstall, raucStatus } from '../../services/updater/rauc.js';
import { devKeys, makeBundle, repoRoot, sh, startRaucHost, type RaucHost } from './rauc-host.js';

let h: RaucHost;
let work: string;
const code = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return isPksError(e) ? e.code : `not coded: ${String(e)}`;
  }
  return 'no error';
};
const slotB = () => readFileSync(h.slots.B);
const untouched = () => slotB().every((b) => b === 0);
const install = (file: string) => raucInstall(file, { conf: h.conf, env: h.env, reportDir: h.reportDir }, () => undefined);

test.before(async () => {
  h = await startRaucHost();
  work = mkdtempSync(path.join(os.tmpdir(), 'pks-bundles-'));
});
test.after(async () => {
  await h?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a bundle signed by another CA is refused (rauc info and rauc install), slot B untouched', async () => {
  const otherKeys = mkdtempSync(path.join(os.tmpdir(), 'pks-otherkeys-'));
  try {
    sh(path.join(repoRoot, 'scripts/update/keys.sh'), ['--dir', otherKeys, 'init']);
    const b = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'foreign.raucb'), keys: otherKeys });
    assert.is(await code(inspectBundle(b, { conf: h.conf, env: h.env })), 'PKS_UPDATE_SIGNATURE');
    assert.is(await code(install(b)), 'PKS_UPDATE_SIGNATURE');
    assert.ok(untouched());
    assert.equal(h.entries(), ['pks-0-B+0-3.efi', 'pks-1-A.efi']);
  } finally {
    rmSync(otherKeys, { recursive: true, force: true });
  }
});

test('a bundle for another compatible is refused', async () => {
  const b = makeBundle({ version: '1.1.0', svn: 2, compatible: 'pks-lab-rig', out: path.join(work, 'compat.raucb') });
  assert.is(await code(install(b)), 'PKS_UPDATE_INCOMPATIBLE');
  assert.ok(untouched());
});

test('truncated and corrupted bundles are refused', async () => {
  const good = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'cut.raucb') });
  const size = statSync(good).size;
  truncateSync(good, Math.floor(size / 2));
  assert.is(await code(inspectBundle(good, { conf: h.conf, env: h.env })), 'PKS_UPDATE_CORRUPT');
  assert.is(await code(install(good)), 'PKS_UPDATE_CORRUPT');
  const bad = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'flip.raucb') });
  const fd = openSync(bad, 'r+');
  writeSync(fd, Buffer.from('garbage!'), 0, 8, 20_000);
  closeSync(fd);
  const c = await code(install(bad));
  assert.ok(c === 'PKS_UPDATE_SIGNATURE' || c === 'PKS_UPDATE_CORRUPT', c);
  assert.ok(untouched());
});

test('a bundle signed by a revoked signing certificate is refused (keyring CRL)', async () => {
  const keys = devKeys();
  sh(path.join(repoRoot, 'scripts/update/keys.sh'), ['--dir', keys, 'issue', 'leaver']);
  const b = makeBundle({ version: '1.1.0', svn: 2, signer: 'leaver', out: path.join(work, 'revoked.raucb') });
  // valid before the revocation: the refusal below is the CRL's doing
  assert.is((await inspectBundle(b, { conf: h.conf, env: h.env })).version, '1.1.0');
  const r = sh(path.join(repoRoot, 'scripts/update/keys.sh'), ['--dir', keys, 'revoke', 'leaver']);
  assert.is(r.code, 0, r.stderr);
  assert.is(await code(inspectBundle(b, { conf: h.conf, env: h.env })), 'PKS_UPDATE_SIGNATURE');
  // rauc service read the keyring at start: restart it as the box would after a keyring update
  await h.stopService();
  await h.startService();
  assert.is(await code(install(b)), 'PKS_UPDATE_SIGNATURE');
  assert.ok(untouched());
});

test('an svn below the TPM floor is refused by the pre-install handler with PKS_UPDATE_DOWNGRADE', async () => {
  assert.is(await raiseFloor(3, h.tpm.tcti), 3);
  const b = makeBundle({ version: '1.0.5', svn: 2, out: path.join(work, 'old.raucb') });
  assert.is((await inspectBundle(b, { conf: h.conf, env: h.env })).svn, 2);
  assert.is(await code(install(b)), 'PKS_UPDATE_DOWNGRADE');
  // also straight through the CLI, which is what a person at the console could try
  const r = sh('rauc', ['-c', h.conf, 'install', b], h.env);
  assert.is.not(r.code, 0);
  assert.match(readFileSync(path.join(h.reportDir, 'pre-install.json'), 'utf8'), 'PKS_UPDATE_DOWNGRADE');
  assert.ok(untouched());
  assert.is(await readFloor(h.tpm.tcti), 3);
});

test('a good bundle installs into slot B, which becomes primary with 3 boot tries', async () => {
  const b = makeBundle({ version: '1.2.0', svn: 3, out: path.join(work, 'good.raucb') });
  const seen: number[] = [];
  await raucInstall(b, { conf: h.conf, env: h.env, reportDir: h.reportDir }, (p) => seen.push(p.percent));
  assert.ok(seen.includes(100) && seen.length > 5, String(seen));
  assert.ok(slotB().subarray(0, 20).toString().startsWith('pks-root 1.2.0'));
  assert.equal(h.entries(), ['pks-1-A.efi', 'pks-2-B+3-0.efi']);
  const s = await raucStatus({ conf: h.conf, env: h.env });
  assert.is(s.booted, 'A');
  assert.is(s.primary, 'B');
  assert.is(s.slots.find((x) => x.bootname === 'B')!.version, '1.2.0');
});

test('the product format (verity) builds and verifies here; installing it needs device-mapper (VM)', async () => {
  const img = path.join(work, 'v.img');
  writeFileSync(img, Buffer.concat([Buffer.from('pks-root verity\n'), Buffer.alloc(300_000, 7)]));
  // plus random bytes, so squashfs cannot shrink it below one block
  sh('sh', ['-c', `head -c 200000 /dev/urandom >> ${img}`]);
  const r = sh(path.join(repoRoot, 'scripts/update/bundle.sh'), ['--version', '1.3.0', '--svn', '3', '--keys', devKeys(), '--rootfs', img, '--out', path.join(work, 'verity.raucb')]);
  assert.is(r.code, 0, r.stderr);
  const info = sh('rauc', ['-c', h.conf, 'info', '--output-format=json', path.join(work, 'verity.raucb')], h.env);
  assert.is(info.code, 0, info.stderr);
  assert.match(info.stderr + info.stdout, /verity|1\.3\.0/);
});

test.run();
