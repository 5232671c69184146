// The logic of re-authorisation above the signatures (vault-gate.ts authorisedTrees, the
// manifest contract): the vault takes the application trees from the build's manifest and the
// site configuration from its own running record, computes PCR 15 itself, and refuses other
// trees or a release that is not newer. The real vault, HSM, TPM and RAUC: test/update/reauth.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { measurementManifestText, parseMeasurementManifest, pcr15Replay } from '../../appliance/contracts/measurement.js';
import { measureTrees, pcr15Of } from '../../services/attest/measure.js';
import { signMeasurementManifest } from '../../services/attest/measurement-manifest.js';
import { signGateRecord, verifiedRecord } from '../../services/vault/gate.js';
import { authorisedTrees } from '../../services/vault/vault-gate.js';

const image = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const hsm = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const pem = image.privateKey.export({ type: 'pkcs8', format: 'pem' });
const d = (c: string) => c.repeat(64);
const record = (app: string, cfg: string, release?: string) =>
  signGateRecord(pcr15Replay([{ name: 'pks-app', digest: app }, { name: 'pks-config', digest: cfg }]), [{ name: 'pks-app', digest: app }, { name: 'pks-config', digest: cfg }], new Date(), (x) => sign('sha256', x, hsm.privateKey), release);
const manifest = (app: string, cfg: string, release: string) => signMeasurementManifest({ release, compatible: 'pks-appliance', trees: [{ name: 'pks-app', digest: app }, { name: 'pks-config', digest: cfg }] }, pem);

test('the manifest says what pks-measure will extend: PCR 15 is the replay of the measured trees', async () => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'pks-manifest-'));
  try {
    await mkdir(path.join(root, 'usr/lib/pks'), { recursive: true });
    await writeFile(path.join(root, 'usr/lib/pks/x.js'), 'x\n');
    const m = await measureTrees(root);
    const signed = signMeasurementManifest({ release: '1.0.0', compatible: 'pks-appliance', trees: m }, pem);
    assert.is(signed.pcr15, pcr15Of(m).toString('hex'));
    const { sig, ...body } = signed;
    assert.ok(verify('sha256', measurementManifestText(body), image.publicKey, Buffer.from(sig, 'base64')));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('the new record: application from the manifest, configuration from the running record, PCR 15 recomputed', () => {
  const base = verifiedRecord(record(d('a'), d('c')), (x, s) => verify('sha256', x, hsm.publicKey, s));
  const next = authorisedTrees(manifest(d('b'), d('9'), '1.1.0'), base);
  assert.equal(next.trees, [{ name: 'pks-app', digest: d('b') }, { name: 'pks-config', digest: d('c') }]);
  assert.is(next.pcr15, pcr15Replay(next.trees));
});

test('refused: other trees, a release not newer than the running record, a manifest whose PCR 15 is not its trees', () => {
  const base = verifiedRecord(record(d('a'), d('c'), '1.1.0'), (x, s) => verify('sha256', x, hsm.publicKey, s));
  const other = signMeasurementManifest({ release: '1.2.0', compatible: 'pks-appliance', trees: [{ name: 'pks-app', digest: d('b') }] }, pem);
  assert.throws(() => authorisedTrees(other, base), /other trees/);
  assert.throws(() => authorisedTrees(manifest(d('b'), d('c'), '1.1.0'), base), /not newer/);
  assert.throws(() => authorisedTrees(manifest(d('b'), d('c'), '1.0.9'), base), /not newer/);
  assert.ok(authorisedTrees(manifest(d('b'), d('c'), '1.10.0'), base), 'numeric, not text order');
  const m = manifest(d('b'), d('c'), '1.2.0');
  assert.throws(() => parseMeasurementManifest({ ...m, pcr15: d('0') }), /PCR 15 is not the replay/);
  for (const bad of [null, {}, { ...m, version: 2 }, { ...m, release: '1.2' }, { ...m, trees: [] }, { ...m, sig: '' }])
    assert.throws(() => parseMeasurementManifest(bad), /PKS_UPDATE_MEASUREMENT|measurement manifest/);
});

test.run();
