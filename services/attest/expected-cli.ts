// Build-time: prints expected-pcrs.json for a UKI and a staged rootfs (scripts/image/build.sh).
// Usage: node --import tsx services/attest/expected-cli.ts [--uki UKI.efi | --slot A=UKI.efi --slot B=UKI.efi]
//            [--loader systemd-bootx64.efi] --rootfs DIR
// Without a UKI only PCR 15 is computed (the Yocto rootfs step, before wic makes the UKI).
// --slot: the A/B layout, one UKI per root slot, started by the boot loader --loader.
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { computeExpected } from './expected.js';

const { values } = parseArgs({ options: { uki: { type: 'string' }, slot: { type: 'string', multiple: true }, loader: { type: 'string' }, rootfs: { type: 'string' } }, strict: true });
const slotArgs = (values.slot ?? []).map((a) => /^([A-Z])=(.+)$/.exec(a));
if (!values.rootfs || slotArgs.some((m) => !m) || (values.uki && slotArgs.length > 0)) {
  process.stderr.write('usage: expected-cli.ts [--uki UKI.efi | --slot A=UKI.efi --slot B=UKI.efi] [--loader EFI] --rootfs DIR\n');
  process.exit(2);
}
const slots: Record<string, Buffer> = {};
for (const m of slotArgs) slots[m![1]!] = await readFile(m![2]!);
const expected = await computeExpected({
  uki: values.uki ? await readFile(values.uki) : undefined,
  ...(slotArgs.length > 0 ? { slots } : {}),
  ...(values.loader ? { loader: await readFile(values.loader) } : {}),
  rootfs: values.rootfs,
});
process.stdout.write(JSON.stringify(expected, null, 2) + '\n');
