// Issue 12, stock only for attested boxes, end to end over MQTT: mosquitto (TLS, client
// certificates, the ACL with the attest topics), the reference KMS as its own process verifying
// with the Attestor (EK CA pinned, reference values signed by a build key), the real vault with
// its application gate, the uplink, and swtpm + tpm2-tools as the box's TPM (OVMF event log
// replayed into PCRs 0-7, pks-measure into PCR 15). A box that does not attest gets no stock
// (kms_refused_unattested); the genuine box enrolls its AK by itself, quotes and gets its batch;
// a file changed at run time closes the vault, its signed gate report says so and the KMS refuses
// the next re-order; the file restored, the box attests again and gets stock by itself; a signed
// update (the vault's gate re-authorised by the build-signed manifest, the manifest in the KMS's
// directory) boots a new PCR 15 and the box keeps getting stock (the log it sends replays to it).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, sign } from 'node:crypto';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EV_NO_ACTION, parseEventLog, replayEventLog } from '../../services/attest/eventlog.js';
import { extendPcr, measureTrees } from '../../services/attest/measure.js';
import { signMeasurementManifest } from '../../services/attest/measurement-manifest.js';
import { referenceText } from '../../scripts/kms/attest.js';
import { main as fleet } from '../../scripts/fleet/main.js';
import { waitFor } from '../../scripts/plant/process.js';
import { makeAppTree } from '../attest/app-tree.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';
import { POOL, startRig, type Rig } from './rig.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), '../attest/fixtures/ovmf-uki-eventlog.bin');
let tmp = '';
let tpm: Swtpm | undefined;
let rig: Rig | undefined;

test.after(async () => {
  // the suites share one process: later ones must not send this tree's log
  delete process.env.PKS_MEASUREMENTS;
  await rig?.stop();
  await tpm?.stop();
  await rm(tmp, { recursive: true, force: true });
});

type KmsBox = { alerts: Array<{ code: string; detail: string }>; attest?: { state: string; lastFailure?: { code: string; reason: string } } };

test('unattested box: no stock; genuine box: stock; tampered: refused; restored: stock again', async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-attest-e2e-'));
  const eventLog = await readFile(fixture);
  tpm = await startSwtpm({ ekCert: true, caDir: path.join(tmp, 'tpm-vendor') });
  const t = tpm;
  const firmware = async () => {
    for (const e of parseEventLog(eventLog)) if (e.type !== EV_NO_ACTION) await extendPcr(e.pcr, e.sha256!, t.tcti);
  };
  await firmware();
  // the box's application tree, measured into PCR 15 as pks-measure does at boot
  const { rootfs, file, original, liveFile, remeasure, boot } = await makeAppTree(tmp, tpm, 'uplink');
  // the uplink's quote tool sends pks-measure's log of this boot (on the box /run/pks/measurements.json)
  process.env.PKS_MEASUREMENTS = path.join(tmp, 'measure', 'measurements.json');

  // what the build signs: the reference PCR 4 and 7 of the image, with the image signing key
  const build = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  // the image pins that key inside the measured application tree (the vault's manifestKeyFile): boot again with it
  const pin = path.join(rootfs, 'usr/lib/pks/measurement-signing.pem');
  await writeFile(pin, build.publicKey, { mode: 0o644 });
  const reboot = async () => {
    await t.restart();
    await firmware();
    await boot();
  };
  await reboot();
  const fw = replayEventLog(parseEventLog(eventLog));
  const pcrs = { '4': [fw.get(4)!.toString('hex')], '7': [fw.get(7)!.toString('hex')] };
  const kmsFiles = path.join(tmp, 'kms-attest');
  await mkdir(kmsFiles);
  const manifestsDir = path.join(kmsFiles, 'manifests');
  await mkdir(manifestsDir);
  await writeFile(path.join(kmsFiles, 'reference.json'), JSON.stringify({ version: 1, bank: 'sha256', pcrs, sig: sign('sha256', Buffer.from(referenceText(pcrs)), build.privateKey).toString('base64') }));
  await writeFile(path.join(kmsFiles, 'build.pem'), build.publicKey);
  const ekCaFiles = await Promise.all(tpm.ekCaPems.map(async (pem, i) => {
    const f = path.join(kmsFiles, `ek-ca-${i}.pem`);
    await writeFile(f, pem);
    return f;
  }));

  rig = await startRig({
    name: 'attest-e2e',
    kms: { signer: 'keyfile', attest: { ekCaFiles, referenceFile: path.join(kmsFiles, 'reference.json'), buildKeyFile: path.join(kmsFiles, 'build.pem'), windowSeconds: 600, manifestsDir, stateFile: path.join(kmsFiles, 'attestation.json') } },
    vaultGate: { liveFile, everySeconds: 0.3, manifestKeyFile: pin },
    timing: { reorderRetrySeconds: 1 },
  });
  const r = rig;
  const kmsBox = () => r.kms.fleet.call<KmsBox>('box', { boxId: r.boxId });
  const available = () => r.stub.stats(POOL).available;

  // 1. a box that does not attest (no TPM in its uplink's config): the KMS sends no stock
  r.stub.pools[POOL] = { minimum: 5, reorder: 20 };
  await waitFor('re-order refused', async () => (await kmsBox()).alerts.some((a) => a.code === 'PKS_ATTEST_REQUIRED' && /not enrolled/.test(a.detail)), 20_000, 100);
  assert.is(available(), 0, 'kms_refused_unattested: no batch for a box that never attested');

  // 2. the same box with its TPM: it enrolls its AK, quotes, and the repeated re-order is answered
  await r.uplink.stop();
  r.cfg.attest = { tcti: tpm.tcti as string, eventLog: fixture, everySeconds: 3600, timeoutSeconds: 30 };
  r.uplink = r.newUplink();
  await r.uplink.start();
  await waitFor('stock for the attested box', async () => available() >= 20, 60_000, 200);
  assert.is((await kmsBox()).attest?.state, 'attested');
  assert.is(r.uplink.attestation?.last?.ok, true);
  const lines: string[] = [];
  assert.is(await fleet(['--socket', r.kms.socket, 'attest'], (l) => lines.push(l)), 0);
  assert.match(lines.join('\n'), new RegExp(`${r.boxId}\\s+attested`));

  // 3. a service file changed at run time: PCR 15 (the boot's) still matches, but the vault closes
  //    and its signed gate report says so: the box becomes untrusted and gets no more stock
  await writeFile(file, 'serve(); leak()\n');
  await remeasure();
  await waitFor('vault closed', async () => (await r.vault.client('sentinel').call<{ gate?: { open: boolean } }>('status')).gate?.open === false, 10_000, 100);
  r.stub.pools[POOL] = { minimum: 100, reorder: 20 };
  await waitFor('tampered box refused', async () => (await kmsBox()).attest?.state === 'untrusted', 30_000, 200);
  const st = await kmsBox();
  assert.match(st.attest!.lastFailure!.reason, /application or configuration changed/);
  await waitFor('re-order refused for the untrusted box', async () => (await kmsBox()).alerts.some((a) => a.code === 'PKS_ATTEST_REQUIRED' && /untrusted/.test(a.detail)), 20_000, 100);
  await new Promise((res) => setTimeout(res, 1500));
  assert.is(available(), 20, 'no stock for a tampered box');
  lines.length = 0;
  await fleet(['--socket', r.kms.socket, 'show', r.boxId], (l) => lines.push(l));
  assert.match(lines.join('\n'), /attest\s+untrusted .*PKS_ATTEST_UNTRUSTED the box reports its application or configuration changed/);

  // 4. restored: the vault opens, the next re-order's quote passes, the batch comes, nobody intervened
  await writeFile(file, original);
  await remeasure();
  await waitFor('stock again after the restore', async () => available() >= 40, 60_000, 200);
  assert.is((await kmsBox()).attest?.state, 'attested');

  // 5. a signed update to 2.0.0: the build signs the new slot's measurement; the vault re-authorises
  //    its gate with it (gate-authorise, what the updater does), central ops puts it in the KMS's
  //    manifests directory; the box reboots into the new application: PCR 15 is no longer the
  //    enrolled value, the log it sends replays to it, pks-app is the manifest's, and stock comes
  const slotB = path.join(tmp, 'slot-b');
  await cp(rootfs, slotB, { recursive: true });
  await writeFile(path.join(slotB, path.relative(rootfs, file)), 'serve(); v2()\n');
  const trees = (await measureTrees(slotB)).map((x) => ({ name: x.name, digest: x.digest }));
  const manifest = signMeasurementManifest({ release: '2.0.0', compatible: 'pks-appliance', trees }, build.privateKey);
  await r.vault.client('updater').call('gate-authorise', { manifest: JSON.stringify(manifest) });
  await writeFile(path.join(manifestsDir, '2.0.0.json'), JSON.stringify(manifest));
  await writeFile(file, 'serve(); v2()\n');
  await reboot();
  await waitFor('vault open on the new release', async () => (await r.vault.client('sentinel').call<{ gate?: { open: boolean } }>('status')).gate?.open === true, 10_000, 100);
  const before = available();
  r.stub.pools[POOL] = { minimum: 1000, reorder: 20 };
  await waitFor('stock after the update', async () => available() >= before + 40, 60_000, 200);
  assert.is((await kmsBox()).attest?.state, 'attested', 'the updated box is attested');
  // the KMS recorded the trees at enrollment (from the log the uplink sent) and the release as the box's floor
  const [rec] = JSON.parse(await readFile(path.join(kmsFiles, 'attestation.json'), 'utf8')) as { trees?: { name: string }[]; release?: string }[];
  assert.equal(rec?.trees?.map((x) => x.name), ['pks-app', 'pks-config']);
  assert.is(rec?.release, '2.0.0');
});

test.run();
