// Provisioning: records what the site configuration (/etc/pks) measures to, for `pksctl status`
// (see site-expected.ts). Run by rootfs-overlay/usr/lib/pks-setup/setup.sh after it wrote the
// configs. Usage: node site-expected-cli.js [--out FILE] [--rootfs DIR]
import { parseArgs } from 'node:util';
import { asPksError } from '../../appliance/errors.js';
import { recordSiteExpected } from './site-expected.js';

try {
  const { values } = parseArgs({ options: { out: { type: 'string' }, rootfs: { type: 'string' } }, strict: true });
  const rec = await recordSiteExpected({ ...(values.out ? { out: values.out } : {}), ...(values.rootfs ? { rootfs: values.rootfs } : {}) });
  for (const m of rec.measurements) process.stdout.write(`pks-setup: ${m.name} ${m.path} ${m.files} files sha256:${m.digest} recorded\n`);
} catch (err) {
  const e = asPksError(err);
  process.stderr.write(`site-expected: ${e.code}: ${e.detail}\n`);
  process.exitCode = 1;
}
