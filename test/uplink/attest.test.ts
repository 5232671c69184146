// Issue 12, stock only for attested boxes, end to end over MQTT: mosquitto (TLS, client
// certificates, the ACL with the attest topics), the reference KMS as its own process verifying
// with the Attestor (EK CA pinned, reference values signed by a build key), the real vault with
// its application gate, the uplink, and swtpm + tpm2-tools as the box's TPM (OVMF event log
// replayed into PCRs 0-7, pks-measure into PCR 15). A box that does not attest gets no stock
// (kms_refused_unattested); the genuine box enrolls its AK by itself, quotes and gets its batch;
// a file changed at run time closes the vault, its signed gate report says so and the KMS refuses
// the next re-order; the file restored, the box attests again and gets stock by itself.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EV_NO_ACTION, parseEventLog } from '../../services/attest/eventlog.js';
import { extendPcr } from '../../services/attest/measure.js';
import { main as fleet } from '../../scripts/fleet/main.js';
import { waitFor } from '../../scripts/plant/process.js';
import { makeAppTree } from '../attest/app-tree.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';
import { writeKmsAttestFiles } from '../attest/kms-attest-files.js';
import { POOL, startRig, type Rig } from './rig.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), '../attest/fixtures/ovmf-uki-eventlog.bin');
let tmp = '';
let tpm: Swtpm | undefined;
let rig: Rig | undefined;

test.after(async () => {
  await rig?.stop();
  await tpm?.stop();
  await rm(tmp, { recursive: true, force: true });
});

type KmsBox = { alerts: Array<{ code: string; detail: string }>; attest?: { state: string; lastFailure?: { code: string; reason: string } } };

test('unattested box: no stock; genuine box: stock; tampered: refused; restored: stock again', async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-attest-e2e-'));
  const eventLog = await readFile(fixture);
  tpm = await startSwtpm({ ekCert: true, caDir: path.join(tmp, 'tpm-vendor') });
  for (const e of parseEventLog(eventLog)) if (e.type !== EV_NO_ACTION) await extendPcr(e.pcr, e.sha256!, tpm.tcti);
  // the box's application tree, measured into PCR 15 as pks-measure does at boot
  const { file, original, liveFile, remeasure } = await makeAppTree(tmp, tpm, 'uplink');

  // what the build signs: the reference PCR 4 and 7 of the image, with the image signing key
  const attest = await writeKmsAttestFiles(path.join(tmp, 'kms-attest'), eventLog, tpm.ekCaPems, 600);

  rig = await startRig({
    name: 'attest-e2e',
    kms: { signer: 'keyfile', attest },
    vaultGate: { liveFile, everySeconds: 0.3 },
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
});

test.run();
