// Build-time: prints the signed measurement manifest of a release (measurement-manifest.ts).
// Usage: node --import tsx services/attest/measurement-manifest-cli.ts --release V [--compatible C]
//          --key IMAGE_SIGNING_KEY.pem (--rootfs STAGED_ROOTFS | --expected expected-pcrs.json)
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { asPksError } from '../../appliance/errors.js';
import { COMPATIBLE } from '../../appliance/contracts/update.js';
import { readExpected } from './expected.js';
import { manifestFromExpected, manifestFromRootfs } from './measurement-manifest.js';

try {
  const { values: v } = parseArgs({ options: { release: { type: 'string' }, compatible: { type: 'string' }, key: { type: 'string' }, rootfs: { type: 'string' }, expected: { type: 'string' } }, strict: true });
  if (!v.release || !v.key || (!v.rootfs === !v.expected)) {
    process.stderr.write('usage: measurement-manifest-cli.ts --release V [--compatible C] --key KEY.pem (--rootfs DIR | --expected FILE)\n');
    process.exit(2);
  }
  const key = await readFile(v.key);
  const compatible = v.compatible ?? COMPATIBLE;
  const m = v.rootfs ? await manifestFromRootfs(v.rootfs, v.release, compatible, key) : manifestFromExpected(await readExpected(v.expected!), v.release, compatible, key);
  process.stdout.write(JSON.stringify(m) + '\n');
} catch (err) {
  const e = asPksError(err);
  process.stderr.write(`measurement-manifest: ${e.code}: ${e.detail}\n`);
  process.exitCode = 1;
}
