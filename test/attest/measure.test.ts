// Measured boot against a real TPM (swtpm + tpm2-tools): the tree manifest, the PCR 15
// measurement, and the three-way status check with the OVMF event log fixture replayed into the
// TPM as the firmware would have extended it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmod, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPksError } from '../../appliance/errors.js';
import { treeManifest } from '../../services/attest/manifest.js';
import { extendPcr, measureBoot, measureTrees, pcr15Of, readMeasurementLog, readPcrs } from '../../services/attest/measure.js';
import { EV_NO_ACTION, parseEventLog, replayEventLog } from '../../services/attest/eventlog.js';
import { sha256 } from '../../services/attest/pcr.js';
import { attestStatus } from '../../services/attest/verify.js';
import { readSiteExpected, recordSiteExpected } from '../../services/attest/site-expected.js';
import { statusCommand } from '../../appliance/pksctl/status.js';
import { startSwtpm, type Swtpm } from './swtpm.js';

const fixture = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/ovmf-uki-eventlog.bin');
let tmp = '';
let tpm: Swtpm | undefined;

async function rootfs(): Promise<string> {
  const r = path.join(tmp, `rootfs-${Math.random().toString(16).slice(2)}`);
  await mkdir(path.join(r, 'usr/lib/pks/dist/services'), { recursive: true });
  await writeFile(path.join(r, 'usr/lib/pks/package.json'), '{"type":"module"}\n');
  await writeFile(path.join(r, 'usr/lib/pks/dist/services/main.js'), 'console.log(1)\n');
  await symlink('dist/services/main.js', path.join(r, 'usr/lib/pks/main.js'));
  await mkdir(path.join(r, 'etc/pks/credentials'), { recursive: true });
  await writeFile(path.join(r, 'etc/pks/vault.json'), '{"slot":0}\n');
  await writeFile(path.join(r, 'etc/pks/credentials/hsm-pin'), '1234\n');
  return r;
}

test.before.each(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-attest-'));
  tpm = await startSwtpm();
});
test.after.each(async () => {
  await tpm?.stop();
  tpm = undefined;
  await rm(tmp, { recursive: true, force: true });
});

test('the manifest covers names, modes, contents and links, and nothing else', async () => {
  const r = await rootfs();
  const app = path.join(r, 'usr/lib/pks');
  const a = await treeManifest(app);
  assert.ok(a.text.includes('l dist/services/main.js main.js'));
  assert.is(a.files, 2);
  assert.is((await treeManifest(app)).text, a.text, 'deterministic');
  await chmod(path.join(app, 'package.json'), 0o600);
  const b = await treeManifest(app);
  assert.is.not(b.text, a.text, 'mode is measured');
  await writeFile(path.join(app, 'a b'), 'x');
  await mkdir(path.join(app, 'a-b'));
  await mkdir(path.join(app, 'a'));
  await writeFile(path.join(app, 'a/b'), 'y');
  const c = await treeManifest(app);
  const unescape = (p: string): string => p.replace(/\\x([0-9a-f]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  const paths = c.text.trim().split('\n').map((l) => unescape(l.slice(l.lastIndexOf(' ') + 1)));
  assert.equal(paths, [...paths].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))), 'byte order of paths');
  assert.ok(c.text.includes(' a\\x20b\n'), 'spaces escaped');
  assert.is((await treeManifest(path.join(r, 'nope'))).text, 'absent\n');
});

test('credentials are not measured, configuration is', async () => {
  const r = await rootfs();
  const before = await measureTrees(r);
  await writeFile(path.join(r, 'etc/pks/credentials/hsm-pin'), '9999\n');
  assert.equal(await measureTrees(r), before);
  await writeFile(path.join(r, 'etc/pks/vault.json'), '{"slot":1}\n');
  const after = await measureTrees(r);
  assert.is(after[0]!.digest, before[0]!.digest);
  assert.is.not(after[1]!.digest, before[1]!.digest);
});

test('measureBoot extends PCR 15 to the value the build computes, once per boot', async () => {
  const r = await rootfs();
  const logPath = path.join(tmp, 'run/pks/measurements.json');
  const log = await measureBoot({ rootfs: r, tcti: tpm!.tcti, logPath });
  const expected = pcr15Of(await measureTrees(r)).toString('hex');
  assert.is(log.pcrValue, expected);
  assert.is((await readPcrs([15], tpm!.tcti)).get(15)!.toString('hex'), expected);
  assert.equal(await readMeasurementLog(logPath), log);
  try {
    await measureBoot({ rootfs: r, tcti: tpm!.tcti, logPath });
    assert.unreachable('measured twice');
  } catch (e) {
    assert.ok(isPksError(e) && e.code === 'PKS_CONFLICT');
  }
  await writeFile(logPath, '{"version":1,"pcr":15,"bank":"sha256","events":[{"name":"x"}]}');
  try {
    await readMeasurementLog(logPath);
    assert.unreachable('accepted a malformed log');
  } catch (e) {
    assert.ok(isPksError(e) && e.code === 'PKS_CONFIG_INVALID');
  }
});

/** Extends the TPM as OVMF + systemd-stub + systemd-pcrphase did in the captured boot. */
async function replayFirmware(tcti: string): Promise<void> {
  for (const e of parseEventLog(await readFile(fixture))) {
    if (e.type !== EV_NO_ACTION) await extendPcr(e.pcr, e.sha256!, tcti);
  }
  for (const w of ['sysinit', 'ready']) await extendPcr(11, sha256(w), tcti);
}

test('status: logs replay, PCRs are the expected ones; a foreign extend is caught', async () => {
  const r = await rootfs();
  const tcti = tpm!.tcti;
  await replayFirmware(tcti);
  const measurementsPath = path.join(tmp, 'measurements.json');
  await measureBoot({ rootfs: r, tcti, logPath: measurementsPath });
  const fw = replayEventLog(parseEventLog(await readFile(fixture)));
  const live11 = (await readPcrs([11], tcti)).get(11)!.toString('hex');
  const measurements = await measureTrees(r);
  const expectedPath = path.join(tmp, 'expected-pcrs.json');
  await writeFile(
    expectedPath,
    JSON.stringify({
      version: 1,
      bank: 'sha256',
      pcrs: { '4': fw.get(4)!.toString('hex'), '7': fw.get(7)!.toString('hex'), '11': live11, '15': pcr15Of(measurements).toString('hex') },
      pcr11Phases: { ready: live11 },
      measurements,
    }),
  );
  const opts = { tcti, expectedPath, eventLogPath: fixture, measurementsPath, sitePath: path.join(tmp, 'no-record.json') };
  const good = await attestStatus(opts);
  assert.equal(good.problems, []);
  assert.ok(good.ok);
  assert.is(good.pcrs.find((p) => p.pcr === 11)!.phase, 'sysinit,ready');
  const lines: string[] = [];
  assert.is(await statusCommand(['--tcti', tcti, '--expected', expectedPath, '--event-log', fixture, '--measurements', measurementsPath], (s) => lines.push(s)), 0);
  assert.match(lines.join('\n'), /measured boot: OK/);

  await extendPcr(4, sha256('something else booted'), tcti);
  const bad = await attestStatus(opts);
  assert.not.ok(bad.ok);
  assert.ok(bad.problems.includes('PCR 4: does not replay from its log'));
  assert.ok(bad.problems.includes('PCR 4: not the expected value'));
  const out: string[] = [];
  assert.is(await statusCommand(['--json', '--tcti', tcti, '--expected', expectedPath, '--event-log', fixture, '--measurements', measurementsPath], (s) => out.push(s)), 1);
  assert.is(JSON.parse(out[0]!).ok, false);
});

test('a provisioned box: PCR 15 expects the image application and the config setup recorded', async () => {
  const r = await rootfs();
  const tcti = tpm!.tcti;
  await replayFirmware(tcti);
  // the image build's expectation: the config tree as the image ships it
  const image = await measureTrees(r);
  const expectedPath = path.join(tmp, 'expected-pcrs.json');
  await writeFile(expectedPath, JSON.stringify({ version: 1, bank: 'sha256', pcrs: { '15': pcr15Of(image).toString('hex') }, pcr11Phases: {}, measurements: image }));
  // first boot: the setup writes the site config, records it, then the boot measures
  await writeFile(path.join(r, 'etc/pks/tester-api.json'), '{"tls":{}}\n');
  const sitePath = path.join(tmp, 'attest/config-expected.json');
  const rec = await recordSiteExpected({ rootfs: r, out: sitePath, now: new Date(0) });
  assert.equal(rec.measurements.map((m) => m.name), ['pks-config']);
  assert.equal(await readSiteExpected(sitePath), rec);
  const measurementsPath = path.join(tmp, 'measurements.json');
  await measureBoot({ rootfs: r, tcti, logPath: measurementsPath });
  const opts = { tcti, expectedPath, eventLogPath: fixture, measurementsPath };

  const good = await attestStatus({ ...opts, sitePath });
  assert.is(good.configExpectation, 'provisioning');
  assert.equal(good.problems, []);
  assert.ok(good.ok);
  // without the record the image's unprovisioned config is expected: the site config differs
  const unprovisioned = await attestStatus({ ...opts, sitePath: path.join(tmp, 'none.json') });
  assert.is(unprovisioned.configExpectation, 'image');
  assert.not.ok(unprovisioned.ok);
  assert.ok(unprovisioned.problems.includes('pks-config (/etc/pks) differs from the image'));
  // the application stays judged against the image whatever the record says
  await writeFile(sitePath, JSON.stringify({ ...rec, measurements: [{ ...rec.measurements[0]!, name: 'pks-app' }] }));
  let refused = false;
  await readSiteExpected(sitePath).catch((e: unknown) => (refused = isPksError(e)));
  assert.ok(refused, 'a record naming the application is refused');
  assert.not.ok((await attestStatus({ ...opts, sitePath })).ok);
});

test('status without the expected values or the logs says so and is not OK', async () => {
  const s = await attestStatus({ tcti: tpm!.tcti, sitePath: path.join(tmp, 'none.json'), expectedPath: path.join(tmp, 'none.json'), eventLogPath: path.join(tmp, 'none.bin'), measurementsPath: path.join(tmp, 'none.json') });
  assert.not.ok(s.ok);
  assert.ok(s.problems.some((p) => p.startsWith('expected values:')));
  assert.ok(s.problems.some((p) => p.startsWith('firmware event log:')));
  assert.ok(s.problems.some((p) => p.startsWith('measurement log:')));
});

test.run();
