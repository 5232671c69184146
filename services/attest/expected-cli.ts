// Build-time: prints expected-pcrs.json for a UKI and a staged rootfs (scripts/image/build.sh).
// Usage: node --import tsx services/attest/expected-cli.ts --uki UKI.efi --rootfs DIR
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { computeExpected } from './expected.js';

const { values } = parseArgs({ options: { uki: { type: 'string' }, rootfs: { type: 'string' } }, strict: true });
if (!values.uki || !values.rootfs) {
  process.stderr.write('usage: expected-cli.ts --uki UKI.efi --rootfs DIR\n');
  process.exit(2);
}
const expected = await computeExpected({ uki: await readFile(values.uki), rootfs: values.rootfs });
process.stdout.write(JSON.stringify(expected, null, 2) + '\n');
