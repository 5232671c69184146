// Build-time: prints expected-pcrs.json for a UKI and a staged rootfs (scripts/image/build.sh).
// Usage: node --import tsx services/attest/expected-cli.ts [--uki UKI.efi] --rootfs DIR
// Without --uki only PCR 15 is computed (the Yocto rootfs step, before wic makes the UKI).
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { computeExpected } from './expected.js';

const { values } = parseArgs({ options: { uki: { type: 'string' }, rootfs: { type: 'string' } }, strict: true });
if (!values.rootfs) {
  process.stderr.write('usage: expected-cli.ts [--uki UKI.efi] --rootfs DIR\n');
  process.exit(2);
}
const expected = await computeExpected({ uki: values.uki ? await readFile(values.uki) : undefined, rootfs: values.rootfs });
process.stdout.write(JSON.stringify(expected, null, 2) + '\n');
