// Issue 12 with 13: the vault's application gate re-authorised by a signed update, on the real
// parts: SoftHSM and the real vault process (as pks-vault when run as root), swtpm for PCR 15
// (pks-measure's boot measurement of whichever slot's tree "boots"), the real RAUC host of
// rauc-host.ts with the updater as its own process (driver.ts, power cuts by SIGKILL). The two
// slots' trees are directories; `slot` is a link to the one that boots, and the vault's pinned
// image signing key is read through it, as /usr/lib/pks/measurement-signing.pem is on the box.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { measureBoot, measureLive, measureTrees } from '../../services/attest/measure.js';
import { signMeasurementManifest } from '../../services/attest/measurement-manifest.js';
import { pcr15Replay } from '../../appliance/contracts/measurement.js';
import { waitFor } from '../../scripts/plant/process.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { openPath } from '../../scripts/plant/users.js';
import { makeAppTree } from '../attest/app-tree.js';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';
import { errorCode } from '../helpers/errors.js';
import { makeBundle, startRaucHost, type RaucHost } from './rauc-host.js';
import { rebooted, result, runUpdater } from './run-updater.js';

const image = generateKeyPairSync('rsa', { modulusLength: 2048 });
const attacker = generateKeyPairSync('rsa', { modulusLength: 2048 });
const PIN = 'usr/lib/pks/measurement-signing.pem';

let tmp = '';
let tpm: Swtpm;
let vault: VaultHandle;
let liveFile = '';
let roots: Record<string, string> = {};
const slot = () => path.join(tmp, 'slot');
const recordFile = () => path.join(tmp, 'vault', 'gate-record.json');
const pendingFile = () => path.join(tmp, 'vault', 'gate-record.next.json');
const appFile = (root: string) => path.join(root, 'usr/lib/pks/dist/services/tester-api/main.js');

/** A slot tree: tree A with the application file's content `app` (a release of its own). */
async function makeSlot(name: string, app: string): Promise<string> {
  const root = path.join(tmp, `root-${name}`);
  await cp(roots.A!, root, { recursive: true });
  await writeFile(appFile(root), app);
  roots[name] = root;
  return root;
}

/** Power-on of a slot's tree: the link points at it, PCRs reset, pks-measure extends PCR 15. */
async function bootTree(name: string): Promise<void> {
  await rm(slot(), { force: true });
  await symlink(roots[name]!, slot());
  await tpm.restart();
  await measureBoot({ rootfs: slot(), tcti: tpm.tcti, logPath: path.join(tmp, 'measurements.json'), livePath: liveFile });
}
const remeasure = () => measureLive({ rootfs: slot(), tcti: tpm.tcti, livePath: liveFile });

type Gate = { open: boolean; code?: string; reason?: string };
const gateOf = async () => (await vault.client('sentinel').call<{ gate?: Gate }>('status')).gate;
const until = (open: boolean) => waitFor(`gate ${open ? 'open' : 'closed'}`, async () => ((await gateOf())?.open === open ? gateOf() : false), 15_000, 100);
const code = errorCode;
let updaterClient: IpcClient;
const authorise = (m: unknown) => updaterClient.call('gate-authorise', { manifest: typeof m === 'string' ? m : JSON.stringify(m) });

/** The build's manifest of a slot's tree, signed with `key` (the image signing key by default). */
async function manifestOf(name: string, release: string, key = image.privateKey): Promise<Record<string, unknown>> {
  const trees = (await measureTrees(roots[name]!)).map((t) => ({ name: t.name, digest: t.digest }));
  return signMeasurementManifest({ release, compatible: 'pks-appliance', trees }, key.export({ type: 'pkcs8', format: 'pem' })) as unknown as Record<string, unknown>;
}
const writeManifest = async (m: unknown, file: string) => (await writeFile(file, JSON.stringify(m) + '\n'), file);

test.before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'pks-reauth-'));
  openPath(tmp, '/');
  tpm = await startSwtpm();
  const a = await makeAppTree(path.join(tmp, 'a'), tpm);
  liveFile = a.liveFile;
  roots = { A: a.rootfs };
  // the image pins its signing key inside the measured application tree
  await writeFile(path.join(roots.A!, PIN), image.publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
  await bootTree('A');
  vault = await startVault({
    dir: path.join(tmp, 'vault'),
    runDir: path.join(tmp, 'run'),
    logDir: tmp,
    boxId: 'box-reauth',
    gate: { liveFile, everySeconds: 0.3, manifestKeyFile: path.join(slot(), PIN) },
  });
  updaterClient = vault.client('updater');
  assert.equal(await until(true), { open: true });
});
test.after(async () => {
  await vault?.stop();
  await tpm?.stop();
  await rm(tmp, { recursive: true, force: true });
});

test('the same PCR 15 as pks-measure: the contract replay matches the boot', async () => {
  const log = JSON.parse(await readFile(path.join(tmp, 'measurements.json'), 'utf8')) as { pcrValue: string; events: { name: string; digest: string }[] };
  assert.is(pcr15Replay(log.events), log.pcrValue);
});

test('the vault refuses a manifest signed by another key, an altered one, an old release; nothing is written', async () => {
  await makeSlot('B', 'serve(); v2()\n');
  assert.is(await code(authorise(await manifestOf('B', '1.1.0', attacker.privateKey))), 'PKS_UPDATE_MEASUREMENT');
  const good = await manifestOf('B', '1.1.0');
  // altered after signing: another application digest (PCR 15 made to match it)
  const trees = (good.trees as { name: string; digest: string }[]).map((t) => (t.name === 'pks-app' ? { ...t, digest: 'ee'.repeat(32) } : t));
  assert.is(await code(authorise({ ...good, trees, pcr15: pcr15Replay(trees) })), 'PKS_UPDATE_MEASUREMENT');
  assert.is(await code(authorise({ ...good, release: '1.1.1' })), 'PKS_UPDATE_MEASUREMENT', 'the release is signed too');
  assert.is(await code(authorise('{"version":1')), 'PKS_UPDATE_MEASUREMENT');
  assert.not.ok(existsSync(pendingFile()), 'no pending record');
  assert.equal(await gateOf(), { open: true });
});

test('a closed gate refuses re-authorisation and re-recording; a swapped pin closes the gate', async () => {
  const good = await manifestOf('B', '1.1.0');
  await writeFile(appFile(roots.A!), 'serve(); leak()\n');
  await remeasure();
  await until(false);
  assert.is(await code(authorise(good)), 'PKS_TAMPERED', 'no record for anything while this slot is tampered');
  assert.is(await code(vault.client('pksctl').call('gate-record', {})), 'PKS_TAMPERED', 'the console cannot turn a tampered measurement into the provisioned one');
  assert.not.ok(existsSync(pendingFile()));
  await writeFile(appFile(roots.A!), 'serve()\n');
  await remeasure();
  await until(true);
  // whoever holds the disk pins his own key: pks-app changes, the gate closes, his manifest is refused
  const pin = await readFile(path.join(roots.A!, PIN), 'utf8');
  await writeFile(path.join(roots.A!, PIN), attacker.publicKey.export({ type: 'spki', format: 'pem' }));
  await remeasure();
  await until(false);
  assert.is(await code(authorise(await manifestOf('B', '1.1.0', attacker.privateKey))), 'PKS_TAMPERED');
  await writeFile(path.join(roots.A!, PIN), pin);
  await remeasure();
  await until(true);
  assert.not.ok(existsSync(pendingFile()));
});

let h: RaucHost;
const stateDir = () => path.join(h.dir, 'updater-state');
const job = (o: Record<string, unknown>) => ({ vaultSocket: socketPath('vault', 'updater', path.join(tmp, 'run')), ...o });

test('update with an authorised manifest: the gate opens on the new slot, the old record is gone after mark-good', async () => {
  h = await startRaucHost({ slotBytes: 8 << 20 });
  const before = await readFile(recordFile(), 'utf8');
  const b = makeBundle({ version: '1.1.0', svn: 2, out: path.join(tmp, 'b.raucb'), measurement: await writeManifest(await manifestOf('B', '1.1.0'), path.join(tmp, 'b.json')) });
  const r1 = await runUpdater(h, stateDir(), job({ action: 'install', file: b }));
  assert.ok(rebooted(r1), JSON.stringify(r1.lines.slice(-3)));
  assert.ok(existsSync(pendingFile()), 'pending record for B written before the reboot');
  assert.is(await readFile(recordFile(), 'utf8'), before, "A's record kept");
  assert.is(await h.boot(), 'B');
  await bootTree('B');
  assert.equal(await until(true), { open: true });
  const s = result(await runUpdater(h, stateDir(), job({ action: 'recover' })))!;
  assert.is(s.last?.ok, true, JSON.stringify(s));
  assert.not.ok(existsSync(pendingFile()), 'settled');
  assert.is((JSON.parse(await readFile(recordFile(), 'utf8')) as { release?: string }).release, '1.1.0');
  assert.equal(await gateOf(), { open: true });
  // the old slot's measurement no longer opens anything
  await bootTree('A');
  assert.is((await until(false))?.code, 'PKS_TAMPERED');
  await bootTree('B');
  await until(true);
});

test('a manifest by another key, altered, or for another version than the bundle: refused, coded, nothing installed', async () => {
  await makeSlot('C', 'serve(); v3()\n');
  const entries = h.entries();
  const good = await manifestOf('C', '1.2.0');
  const trees = (good.trees as { name: string; digest: string }[]).map((t) => (t.name === 'pks-app' ? { ...t, digest: 'ee'.repeat(32) } : t));
  const cases: Array<[string, unknown, string]> = [
    ['another key', await manifestOf('C', '1.2.0', attacker.privateKey), 'not signed by the pinned image signing key'],
    ['altered', { ...good, trees, pcr15: pcr15Replay(trees) }, 'not signed by the pinned image signing key'],
    ['another version', await manifestOf('C', '1.3.0'), 'the bundle is pks-appliance 1.2.0'],
  ];
  for (const [what, m, detail] of cases) {
    const b = makeBundle({ version: '1.2.0', svn: 3, out: path.join(tmp, 'c.raucb'), measurement: await writeManifest(m, path.join(tmp, 'c.json')) });
    const r = await runUpdater(h, stateDir(), job({ action: 'install', file: b }));
    const err = r.lines.find((l) => l.error);
    assert.is(err?.error, 'PKS_UPDATE_MEASUREMENT', `${what}: ${JSON.stringify(r.lines.slice(-2))}`);
    assert.not.ok(rebooted(r), what);
    assert.not.ok(existsSync(pendingFile()), `${what}: no pending record`);
    assert.equal(h.entries(), entries, `${what}: slot untouched`);
    assert.match(String(err?.detail), detail, what);
  }
  // the vault itself: a signed manifest of the running release (or an older one) is a replay
  assert.is(await code(authorise(await manifestOf('C', '1.1.0'))), 'PKS_UPDATE_MEASUREMENT');
  assert.is(await code(authorise(await manifestOf('C', '1.0.5'))), 'PKS_UPDATE_MEASUREMENT');
  assert.not.ok(existsSync(pendingFile()));
  // and the tree of C, had it been installed some other way, does not open the gate
  await bootTree('C');
  assert.is((await until(false))?.code, 'PKS_TAMPERED');
  await bootTree('B');
  await until(true);
});

test('an authorised manifest that is not what the slot boots: gate closed there, health check fails, fallback with the reason', async () => {
  await makeSlot('D', 'serve(); v4()\n');
  await makeSlot('D2', 'serve(); v4(); evil()\n');
  const b = makeBundle({ version: '1.4.0', svn: 3, out: path.join(tmp, 'd.raucb'), measurement: await writeManifest(await manifestOf('D', '1.4.0'), path.join(tmp, 'd.json')) });
  assert.ok(rebooted(await runUpdater(h, stateDir(), job({ action: 'install', file: b }))));
  assert.is(await h.boot(), 'A');
  await bootTree('D2');
  await until(false);
  const r = await runUpdater(h, stateDir(), job({ action: 'recover' }));
  assert.ok(rebooted(r), 'marked bad, reboots back');
  assert.is(await h.boot(), 'B');
  await bootTree('B');
  await until(true);
  const s = result(await runUpdater(h, stateDir(), job({ action: 'recover' })))!;
  assert.is(s.last?.code, 'PKS_UPDATE_HEALTH_FAILED', JSON.stringify(s));
  assert.match(s.last?.detail ?? '', 'vault gate closed: PKS_TAMPERED');
  assert.is(s.booted.slot, 'B');
  assert.not.ok(existsSync(pendingFile()), 'the pending record is dropped after the fallback');
});

test('kill -9 between the new record and mark-good: exactly the slot that boots opens; then it settles', async () => {
  await makeSlot('E', 'serve(); v5()\n');
  const b = makeBundle({ version: '1.5.0', svn: 3, out: path.join(tmp, 'e.raucb'), measurement: await writeManifest(await manifestOf('E', '1.5.0'), path.join(tmp, 'e.json')) });
  assert.ok(rebooted(await runUpdater(h, stateDir(), job({ action: 'install', file: b }))));
  assert.is(await h.boot(), 'A');
  await bootTree('E');
  // the power goes as soon as the health check starts: not marked good
  const cut = await runUpdater(h, stateDir(), job({ action: 'recover', healthCommand: ['sleep', '2'] }), (l) => l.event?.type === 'update-progress' && l.event.phase === 'checking');
  assert.ok(cut.killed);
  assert.ok(existsSync(pendingFile()) && existsSync(recordFile()), 'both records on disk');
  // either slot the bootloader may pick opens; nothing else does
  await bootTree('E');
  await until(true);
  await bootTree('B');
  await until(true);
  await bootTree('C');
  await until(false);
  // the next power-on boots the new slot again; the updater completes and settles
  assert.is(await h.boot(), 'A');
  await bootTree('E');
  await until(true);
  const s = result(await runUpdater(h, stateDir(), job({ action: 'recover' })))!;
  assert.is(s.last?.ok, true, JSON.stringify(s));
  assert.not.ok(existsSync(pendingFile()));
  await bootTree('B');
  await until(false);
  await h.stop();
});

test.run();
