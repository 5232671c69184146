// Plant fault (issue 17.4): the TPM unavailable. swtpm + tpm2-tools behind a relay that cuts the
// TPM's way in and restores it (tpm-gate.ts: the device gone, PCRs kept behind it).
//  1. At boot: pks-seal unseal (services/attest/seal-cli.ts, as the root oneshot runs it) with the
//     TPM gone fails with a coded error that says the TPM is unavailable (not "boot state
//     changed"), writes no secret (all or none), and the vault, finding no PIN credential, does not
//     start (fail closed, PKS_CREDENTIAL_MISSING). TPM back: the same unseal opens, the vault starts.
//  2. Running: the uplink's attestation (services/uplink/attestation.ts through quote-cli) with the
//     TPM gone reports a coded failure and raises it; the reference KMS (Attestor: EK CA, signed
//     reference values) gets no quote, marks nothing attested and releases no stock, also not
//     after the box's last attestation aged out of the KMS's window; the live re-measurement fails
//     coded and leaves the last measurement as it was; the sentinel's measured-boot check raises a
//     critical alert that says the TPM cannot be read. TPM back: the box attests and gets its stock
//     by itself, nobody intervenes.
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../../appliance/log.js';
import { EV_NO_ACTION, parseEventLog } from '../../services/attest/eventlog.js';
import { extendPcr, measureLive, readPcrs } from '../../services/attest/measure.js';
import { encodeBlob, sealFile, signPcr11Policies, UKI_PCR } from '../../services/attest/seal.js';
import { parseSentinelConfig } from '../../services/sentinel/config.js';
import { plantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { startSentinel, type Sentinel } from '../../services/sentinel/sentinel.js';
import { ROOT, waitFor } from '../../scripts/plant/process.js';
import { ensureServiceUsers, serviceUser } from '../../scripts/plant/users.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { makeAppTree } from '../attest/app-tree.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';
import { writeKmsAttestFiles } from '../attest/kms-attest-files.js';
import { POOL, startRig, type Rig } from '../uplink/rig.js';
import { startTpmGate, type TpmGate } from './tpm-gate.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), '../attest/fixtures/ovmf-uki-eventlog.bin');
const rsa = () => generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function rejects(f: () => Promise<unknown>, re: RegExp, what: string): Promise<void> {
  try {
    await f();
  } catch (e) {
    assert.match(`${(e as { code?: string }).code ?? ''} ${(e as Error).message}`, re, what);
    return;
  }
  assert.unreachable(`${what}: did not fail`);
}

const dirs: string[] = [];
const stops: Array<() => Promise<unknown>> = [];
test.after.each(async () => {
  for (const s of stops.splice(0).reverse()) await s().catch(() => {});
});
test.after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function sealCli(args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', path.join(ROOT, 'services/attest/seal-cli.ts'), ...args], { cwd: ROOT, timeout: 120_000 }, (err, _out, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stderr: String(stderr) }),
    ),
  );
}

test('boot: unseal with the TPM gone fails coded, writes nothing, the vault gets no PIN and stays down; TPM back: it opens', async () => {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-fault-tpm-boot-'));
  dirs.push(tmp);
  const tpm: Swtpm = await startSwtpm();
  stops.push(() => tpm.stop());
  const gate: TpmGate = await startTpmGate(tpm.tcti);
  stops.push(() => gate.stop());

  // setup (plant IT, once): the HSM PIN of a real SoftHSM token and a long secret sealed to this
  // boot; the build's signed PCR 11 policy for the UKI that runs now
  const vault0: VaultHandle = await startVault({ dir: path.join(tmp, 'vault'), runDir: path.join(tmp, 'run'), logDir: tmp, boxId: 'box-tpm-1' });
  await vault0.stop();
  const image = rsa();
  await writeFile(path.join(tmp, 'image.pub'), image.publicKey);
  const pcr11 = (await readPcrs([UKI_PCR], gate.tcti)).get(UKI_PCR)!;
  await writeFile(path.join(tmp, 'signed.json'), JSON.stringify(signPcr11Policies([pcr11], image.privateKey)));
  await writeFile(path.join(tmp, 'pin.sealed'), encodeBlob(await sealFile({ tcti: gate.tcti, data: Buffer.from(vault0.token.pin + '\n'), publicKeyPem: image.publicKey })));
  await writeFile(path.join(tmp, 'mqtt.sealed'), encodeBlob(await sealFile({ tcti: gate.tcti, data: Buffer.alloc(3000, 'k'), publicKeyPem: image.publicKey })));
  // the unit's tmpfs for LoadCredential=
  const creds = path.join(tmp, 'credentials');
  await mkdir(creds, { mode: 0o755 });
  const unseal = (): Promise<{ code: number; stderr: string }> =>
    sealCli(['unseal', '--blob', path.join(tmp, 'pin.sealed'), '--out', path.join(creds, 'hsm-pin'), '--blob', path.join(tmp, 'mqtt.sealed'), '--out', path.join(creds, 'mqtt-key'), '--pubkey', path.join(tmp, 'image.pub'), '--signed', path.join(tmp, 'signed.json'), '--tcti', gate.tcti]);

  // boot with the TPM gone
  await gate.down();
  const r = await unseal();
  assert.is(r.code, 1, r.stderr);
  assert.match(r.stderr, /^pks-seal: PKS_SERVICE_UNAVAILABLE: TPM: /m, 'coded: the TPM is unavailable');
  assert.not.match(r.stderr, /boot state|signature does not match/, 'not reported as a changed boot state');
  assert.equal(await readdir(creds), [], 'no secret and no temp file written');

  // the vault's unit starts anyway (systemd): no PIN credential, so it refuses to start at all
  const credsBefore = process.env.CREDENTIALS_DIRECTORY;
  process.env.CREDENTIALS_DIRECTORY = creds;
  try {
    const v = await startVault({ dir: path.join(tmp, 'vault'), runDir: path.join(tmp, 'run'), logDir: tmp, boxId: 'box-tpm-1', token: vault0.token, waitReady: false });
    stops.push(() => v.stop());
    const code = await Promise.race([v.proc.exited, sleep(30_000).then(() => 'running')]);
    assert.ok(code !== 'running' && code !== 0, `the vault did not stay up without its PIN (exit ${String(code)})`);
    assert.match(await readFile(v.proc.logFile, 'utf8'), /PKS_CREDENTIAL_MISSING/);
    await rejects(() => v.client('pksctl').call('status'), /PKS_IPC_UNAVAILABLE/, 'nothing serves on the vault socket');
    await v.stop();

    // the TPM is back (the unit's restart): the same command opens both, the vault serves
    await gate.up();
    const ok = await unseal();
    assert.is(ok.code, 0, ok.stderr);
    assert.equal((await readdir(creds)).sort(), ['hsm-pin', 'mqtt-key']);
    if (ensureServiceUsers()) for (const f of ['hsm-pin', 'mqtt-key']) await chown(path.join(creds, f), serviceUser('vault').uid, serviceUser('vault').gid); // what LoadCredential= does
    const v2 = await startVault({ dir: path.join(tmp, 'vault'), runDir: path.join(tmp, 'run'), logDir: tmp, boxId: 'box-tpm-1', token: vault0.token });
    stops.push(() => v2.stop());
    assert.is((await v2.client('pksctl').call<{ ready: boolean }>('status')).ready, true);
  } finally {
    if (credsBefore === undefined) delete process.env.CREDENTIALS_DIRECTORY;
    else process.env.CREDENTIALS_DIRECTORY = credsBefore;
  }
});

type KmsBox = { alerts: Array<{ code: string; detail: string }>; attest?: { state: string } };

test('running: TPM gone, attestation fails coded, the KMS marks nothing attested and sends no stock, the sentinel alerts; TPM back: stock by itself', async () => {
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-fault-tpm-live-'));
  dirs.push(tmp);
  const eventLog = await readFile(fixture);
  const tpm = await startSwtpm({ ekCert: true, caDir: path.join(tmp, 'tpm-vendor') });
  stops.push(() => tpm.stop());
  for (const e of parseEventLog(eventLog)) if (e.type !== EV_NO_ACTION) await extendPcr(e.pcr, e.sha256!, tpm.tcti);
  const tree = await makeAppTree(tmp, tpm, 'uplink');
  const gate = await startTpmGate(tpm.tcti);
  stops.push(() => gate.stop());

  // the KMS's attestation: the EK CA of the TPM's vendor, the image's reference PCRs signed by the build key
  const WINDOW_S = 10; // the KMS's least
  const attest = await writeKmsAttestFiles(path.join(tmp, 'kms-attest'), eventLog, tpm.ekCaPems, WINDOW_S);

  // the TPM is gone from the start: the box has never attested
  await gate.down();
  const rig: Rig = await startRig({
    name: 'fault-tpm',
    kms: { signer: 'keyfile', attest },
    vaultGate: { liveFile: tree.liveFile, everySeconds: 0.3 },
    timing: { reorderRetrySeconds: 1 },
    attest: { tcti: gate.tcti, eventLog: fixture, everySeconds: 3600, timeoutSeconds: 20 },
  });
  stops.push(() => rig.stop());
  const kmsBox = () => rig.kms.fleet.call<KmsBox>('box', { boxId: rig.boxId });
  const available = () => rig.stub.stats(POOL).available;

  // the sentinel with its measured-boot check on the same TPM
  const raw = plantSentinelConfig({ dir: path.join(tmp, 'sentinel'), boxId: rig.boxId, smtpPort: 9, services: ['vault'] });
  const scfg = parseSentinelConfig({ ...raw, attest: { enabled: true, tcti: gate.tcti } });
  const sentinel: Sentinel = await startSentinel(scfg, { log: createLogger('sentinel', { level: 'error', write: () => {} }), runDir: path.join(rig.dir, 'run'), manual: true, runAtStart: false });
  stops.push(() => sentinel.stop());
  const tpmAlert = () => sentinel.alerts('open', 100).open.find((a) => a.key === 'tpm:measured-boot');

  // 1. a re-order with the TPM gone: coded failure, no quote at the KMS, no stock
  rig.stub.pools[POOL] = { minimum: 5, reorder: 20 };
  await waitFor('attestation failed', async () => rig.uplink.attestation?.last && rig.uplink.attestation.last.ok === false, 30_000, 100);
  const last = rig.uplink.attestation!.last!;
  assert.is(last.error?.code, 'PKS_SERVICE_UNAVAILABLE', JSON.stringify(last));
  assert.match(last.error!.detail, /TPM/);
  await waitFor('re-order refused', async () => (await kmsBox()).alerts.some((a) => a.code === 'PKS_ATTEST_REQUIRED'), 20_000, 100);
  await sleep(2500); // several re-order retries
  assert.is(available(), 0, 'no stock for a box whose TPM is gone');
  assert.is.not((await kmsBox()).attest?.state, 'attested');
  assert.ok(rig.uplink.attestation!.last!.ok === false);
  // pks-measure --live: coded, and the last measurement stays as it was
  const liveBefore = await readFile(tree.liveFile, 'utf8');
  await rejects(() => measureLive({ rootfs: tree.rootfs, tcti: gate.tcti, livePath: tree.liveFile }), /PKS_SERVICE_UNAVAILABLE/, 'pks-measure --live without the TPM');
  assert.is(await readFile(tree.liveFile, 'utf8'), liveBefore);
  assert.ok(!existsSync(`${tree.liveFile}.tmp`));
  // the sentinel says so, critical
  await sentinel.runNow();
  assert.is(tpmAlert()?.severity, 'critical');
  assert.match(tpmAlert()!.message, /the TPM cannot be read \(PKS_SERVICE_UNAVAILABLE/);

  // 2. the TPM returns: enrolment, quote, stock, by itself
  await gate.up();
  await waitFor('stock once the TPM is back', async () => available() >= 20, 60_000, 200);
  assert.is((await kmsBox()).attest?.state, 'attested');
  await sentinel.runNow();
  assert.not.match(tpmAlert()?.message ?? '', /cannot be read/, 'the TPM reads again (what remains is the missing expected values of this test box)');

  // 3. gone again while the box runs: once its last attestation left the KMS's window, no stock
  await gate.down();
  await sleep(WINDOW_S * 1000 + 500);
  rig.stub.pools[POOL] = { minimum: 100, reorder: 20 };
  await waitFor('the next attestation failed', async () => rig.uplink.attestation?.last?.ok === false, 30_000, 100);
  await sleep(3000);
  assert.is(available(), 20, 'no stock while the TPM is gone and the attestation is stale');
  assert.is.not((await kmsBox()).attest?.state, 'attested');

  // 4. back again: stock again, nobody intervened
  await gate.up();
  await waitFor('stock again', async () => available() >= 40, 60_000, 200);
  assert.is((await kmsBox()).attest?.state, 'attested');
});

test.run();
