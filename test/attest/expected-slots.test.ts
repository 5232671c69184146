// The A/B layout's expected PCR values (issue 13): both slots' UKIs (they differ only in the
// command line) started by systemd-boot. Each slot has its own PCR 4 (the loader, then the UKI,
// then its kernel) and PCR 11; the box compares with the slot it booted, the signed PCR 11 policy
// covers both, and a malformed slot table is refused.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { allPcr11Values, computeExpected, forLivePcr4, readExpected } from '../../services/attest/expected.js';
import { authenticodeDigest, replay, sha256, ukiPcr4Digests } from '../../services/attest/pcr.js';
import { isPksError } from '../../appliance/errors.js';

const stub = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const loaderFile = '/usr/lib/systemd/boot/efi/systemd-bootx64.efi';
const have = existsSync(stub) && existsSync(loaderFile);

// the kernel must be a PE image (PCR 4 measures its Authenticode digest): the stub stands in
function uki(dir: string, name: string, cmdline: string): Buffer {
  const f = (n: string, data: Buffer | string): string => {
    writeFileSync(path.join(dir, n), data);
    return path.join(dir, n);
  };
  const out = path.join(dir, `${name}.efi`);
  execFileSync('objcopy', [
    '--add-section', `.osrel=${f(`${name}.osrel`, 'ID=pks-test\n')}`, '--change-section-vma', '.osrel=0x20000',
    '--add-section', `.cmdline=${f(`${name}.cmdline`, cmdline)}`, '--change-section-vma', '.cmdline=0x30000',
    '--add-section', `.linux=${f(`${name}.linux`, readFileSync(stub))}`, '--change-section-vma', '.linux=0x2000000',
    '--add-section', `.initrd=${f(`${name}.initrd`, Buffer.alloc(3001, 9))}`, '--change-section-vma', '.initrd=0x3000000',
    stub, out,
  ]);
  return readFileSync(out);
}

test('each slot has its own PCR 4 and 11, the loader is in PCR 4, the policy values cover both', async () => {
  if (!have) {
    console.log('  (skipped: systemd-boot-efi missing)');
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-slots-'));
  try {
    const rootfs = path.join(dir, 'rootfs');
    mkdirSync(path.join(rootfs, 'usr/lib/pks'), { recursive: true });
    mkdirSync(path.join(rootfs, 'etc/pks/credentials'), { recursive: true });
    writeFileSync(path.join(rootfs, 'usr/lib/pks/main.js'), 'serve()\n');
    const a = uki(dir, 'a', 'root=PARTUUID=a rauc.slot=A quiet');
    const b = uki(dir, 'b', 'root=PARTUUID=b rauc.slot=B quiet');
    const loader = readFileSync(loaderFile);
    const e = await computeExpected({ slots: { A: a, B: b }, loader, rootfs });

    assert.ok(e.slots?.A && e.slots.B);
    assert.is.not(e.slots.A.pcrs['4'], e.slots.B.pcrs['4']);
    assert.is.not(e.slots.A.pcrs['11'], e.slots.B.pcrs['11']);
    // the top level is slot A's, as readers without a slot table expect
    assert.is(e.pcrs['4'], e.slots.A.pcrs['4']);
    assert.equal(e.pcr11Phases, e.slots.A.pcr11Phases);
    // PCR 4: boot option, separator, systemd-boot, the UKI, its kernel
    const [action, sep] = ukiPcr4Digests(a);
    assert.is(e.slots.B.pcrs['4'], replay([action!, sep!, authenticodeDigest(loader), ...ukiPcr4Digests(b).slice(2)]).toString('hex'));
    assert.is.not(e.slots.A.pcrs['4'], replay(ukiPcr4Digests(a)).toString('hex'), 'without the loader PCR 4 is another value');

    // the box booted from B compares with B's chain; an unknown PCR 4 keeps A's (and fails there)
    const onB = forLivePcr4(e, e.slots.B.pcrs['4']!);
    assert.is(onB.slot, 'B');
    assert.is(onB.pcrs['11'], e.slots.B.pcrs['11']);
    assert.equal(onB.pcr11Phases, e.slots.B.pcr11Phases);
    assert.is(onB.pcrs['15'], e.pcrs['15']);
    const other = forLivePcr4(e, sha256('another loader').toString('hex'));
    assert.is(other.slot, undefined);
    assert.is(other.pcrs['4'], e.slots.A.pcrs['4']);

    // the signed PCR 11 policy approves every phase of both slots (3 + 3 values)
    const values = allPcr11Values(e);
    assert.is(values.length, 6);
    for (const s of [e.slots.A, e.slots.B]) for (const v of Object.values(s.pcr11Phases)) assert.ok(values.includes(v));

    // the file round-trips, and a malformed slot table is refused with a coded error
    const file = path.join(dir, 'expected-pcrs.json');
    writeFileSync(file, JSON.stringify(e));
    assert.equal((await readExpected(file)).slots, e.slots);
    for (const bad of [{ A: { pcrs: { '4': 'zz' }, pcr11Phases: {} } }, { a: e.slots.A }, { A: null }, 'slots']) {
      writeFileSync(file, JSON.stringify({ ...e, slots: bad }));
      try {
        await readExpected(file);
        assert.unreachable(`accepted slots ${JSON.stringify(bad).slice(0, 40)}`);
      } catch (err) {
        assert.ok(isPksError(err) && err.code === 'PKS_CONFIG_INVALID', String(err));
      }
    }
    // one UKI and slots at once is a build mistake
    try {
      await computeExpected({ uki: a, slots: { A: a }, rootfs });
      assert.unreachable('accepted a UKI and slots');
    } catch (err) {
      assert.ok(isPksError(err) && err.code === 'PKS_BAD_REQUEST');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
