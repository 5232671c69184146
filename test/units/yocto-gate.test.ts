// Issue 12 "the Yocto layer carries the same units and policies" as the dev image, as text
// (bitbake does not run here): every unit of rootfs-overlay/ reaches the image through pks-app's
// overlay copy and every one the preset enables is in its SYSTEMD_SERVICE; the image recipe does
// what scripts/image/build.sh does for the gate (the signing key's public half for PCR 11 and as
// the measurement pin inside the measured tree before PCR 15 is computed, expected PCR values,
// the signed PCR 11 policy, the measurement manifest for bundles); and every gate tool the dev
// image build calls has its counterpart in the layer.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MEASUREMENT_SIGNING_KEY_PATH } from '../../appliance/contracts/measurement.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const read = (p: string) => readFileSync(path.join(root, p), 'utf8');
const units = path.join(root, 'rootfs-overlay/usr/lib/systemd/system');
const app = read('yocto-layer/recipes-pks/pks-app/pks-app.bb');
const image = read('yocto-layer/recipes-core/images/pks-image.bb');
/** a BitBake variable's words, with line continuations joined */
const words = (text: string, name: string): string[] => {
  const m = new RegExp(`^${name.replace(/[$:{}]/g, '\\$&')}\\s*\\+?=\\s*"((?:[^"\\\\]|\\\\\\n)*)"`, 'm').exec(text);
  return m ? m[1]!.replace(/\\\n/g, ' ').split(/\s+/).filter(Boolean) : [];
};
const GATE_UNITS = ['pks-measure.service', 'pks-measure-live.service', 'pks-measure-live.timer', 'pks-unseal.service', 'pks-vault.service', 'pks-updater.service'];

test('pks-app installs the whole overlay, so every gate unit of the dev image is in the Yocto image', () => {
  assert.match(app, /cp -R --no-preserve=ownership \$\{S\}\/rootfs-overlay\/\. \$\{D\}\//);
  const overlay = readdirSync(units);
  for (const u of GATE_UNITS) assert.ok(overlay.includes(u), `${u} in rootfs-overlay`);
  assert.ok(words(app, 'FILES:${PN}').includes('${systemd_system_unitdir}'));
  assert.ok(words(app, 'FILES:${PN}').includes('${nonarch_libdir}/sysusers.d'), 'the socket pair groups (pks-vault-updater)');
});

test('every unit the preset enables is enabled by the recipe, and nothing else', () => {
  const preset = read('rootfs-overlay/usr/lib/systemd/system-preset/80-pks.preset')
    .split('\n')
    .map((l) => /^enable\s+(\S+)/.exec(l)?.[1])
    .filter((u): u is string => !!u);
  const enabled = words(app, 'SYSTEMD_SERVICE:${PN}');
  // the layer's own units (the data partition's /etc/pks bind mount): in its files/, installed by do_install
  const own = (u: string) => existsSync(path.join(root, 'yocto-layer/recipes-pks/pks-app/files', u)) && app.includes(`\${WORKDIR}/${u}`);
  for (const u of preset) assert.ok(enabled.includes(u), `${u} enabled by the preset but not by pks-app`);
  for (const u of enabled) assert.ok(preset.includes(u) || u === 'pks-setup.service' || own(u), `${u} enabled by pks-app but not by the preset`);
  for (const u of enabled) assert.ok(existsSync(path.join(units, u)) || u === 'pks-setup.service' || own(u), `${u} has a unit file`);
  // issue 13: /etc/pks comes from the data partition, which the wks mounts at /var/lib/pks
  assert.ok(enabled.includes('etc-pks.mount'), 'etc-pks.mount enabled');
  assert.match(read('yocto-layer/wic/pks-ab.wks.in'), /^part \/var\/lib\/pks .*--label data/m);
  assert.match(read('yocto-layer/recipes-core/rauc/files/system.conf'), /^data-directory=\/var\/lib\/pks\/rauc$/m);
  assert.ok(enabled.includes('pks-measure-live.timer') && enabled.includes('pks-unseal.service') && enabled.includes('pks-measure.service'));
});

test('the image recipe makes the gate policies the dev image build makes', () => {
  const dev = read('scripts/image/build.sh');
  // the dev image: expected PCRs, the image key's public half, the signed PCR 11 policy
  assert.match(dev, 'services/attest/expected-cli.ts');
  assert.match(dev, 'seal-cli.ts sign-policy');
  assert.match(dev, 'pcr-signing.pem');
  // the layer: the same tools, on the target's compiled code
  assert.match(image, 'dist/services/attest/expected-cli.js');
  assert.match(image, 'dist/services/attest/seal-cli.js sign-policy');
  assert.match(image, '/pks-image/pcr-signing.pem');
  assert.match(image, /addtask pks_pcr11_policy after do_image_wic/);
  // the measurement pin inside the measured tree, installed before PCR 15 is computed
  assert.match(image, `\${nonarch_libdir}/pks/${path.basename(MEASUREMENT_SIGNING_KEY_PATH)}`);
  const post = words(image, 'ROOTFS_POSTPROCESS_COMMAND').join(' ');
  assert.ok(post.indexOf('pks_pcr_signing_key') < post.indexOf('pks_expected_pcrs'), 'pin before the expected PCR 15');
  assert.ok(post.indexOf('pks_expected_pcrs') < post.indexOf('pks_measurement_manifest'));
  assert.match(image, 'dist/services/attest/measurement-manifest-cli.js');
  // pks-unseal reads the policy from where the layer puts it
  const dropIn = read('yocto-layer/recipes-pks/pks-app/files/pks-unseal-yocto-policy.conf');
  assert.match(app, 'pks-unseal.service.d/yocto-policy.conf');
  assert.match(dropIn, '--signed /boot/pks/pcr11-policy.json');
  assert.match(image, ':1/pks/pcr11-policy.json');
  // PCR 7 binding and the PIN's sealing are setup's (the same setup.sh on both images)
  assert.match(read('rootfs-overlay/usr/lib/pks-setup/setup.sh'), 'seal-cli.js seal');
  // the TPM parts: tpm2-tools and the device TCTI on the target, the TPM kernel fragment
  assert.ok(words(app, 'RDEPENDS:${PN}').includes('tpm2-tools'));
  assert.ok(words(app, 'RDEPENDS:${PN}').includes('libtss2-tcti-device'));
  assert.match(read('yocto-layer/recipes-kernel/linux/files/pks-tpm.cfg'), /CONFIG_TCG_TPM=y/);
});

test.run();
