// PCR arithmetic against real references: an event log captured from OVMF booting our UKI
// (fixtures/ovmf-uki-eventlog.bin, replay values as tpm2_eventlog 5.4 printed them) and
// systemd-measure's own PCR 11 calculation for a UKI built with objcopy like uki.sh does.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEventLog, pcrDigests, replayEventLog } from '../../services/attest/eventlog.js';
import {
  SEPARATOR_DIGEST,
  authenticodeDigest,
  extend,
  ovmfNoSecureBootPcr7Digests,
  replay,
  sha256,
  ukiPcr11Digests,
} from '../../services/attest/pcr.js';
import { isPksError } from '../../appliance/errors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const log = readFileSync(path.join(here, 'fixtures/ovmf-uki-eventlog.bin'));

test('the captured OVMF log replays to the values tpm2_eventlog computed', () => {
  const pcrs = replayEventLog(parseEventLog(log));
  assert.is(pcrs.get(0)!.toString('hex'), '1119fe2cc2550e9294b01a6355bfeb7ac1507139f07c0afec49f6644002acca9');
  assert.is(pcrs.get(4)!.toString('hex'), '4989d0e2caf01b14556a86ddccdc41fa3dd79b2f8c87636c5f579b7bb1451dfa');
  assert.is(pcrs.get(7)!.toString('hex'), '65caf8dd1e0ea7a6347b635d2b379c93b9a1351edc2afc3ecda700e534eb3068');
  assert.is(pcrs.get(11)!.toString('hex'), '6237f50346a23fd1aa9cd9958648ac91b35ac456ef8ceaedac1ec1dfb7206ce8');
});

test('PCR 7 of OVMF without Secure Boot is computed event by event', () => {
  const events = parseEventLog(log);
  assert.equal(ovmfNoSecureBootPcr7Digests().map((d) => d.toString('hex')), pcrDigests(events, 7).map((d) => d.toString('hex')));
});

test('PCR 4 and 11 events have the shape the expected values assume', () => {
  const events = parseEventLog(log);
  const p4 = pcrDigests(events, 4);
  assert.is(p4.length, 4);
  assert.ok(p4[0]!.equals(sha256('Calling EFI Application from Boot Option')));
  assert.ok(p4[1]!.equals(SEPARATOR_DIGEST));
  const p11 = pcrDigests(events, 11);
  const names = ['.linux', '.osrel', '.cmdline', '.initrd'];
  assert.equal(p11.filter((_, i) => i % 2 === 0).map((d) => d.toString('hex')), names.map((n) => sha256(`${n}\0`).toString('hex')));
});

test('malformed event logs are coded errors', () => {
  for (const bad of [Buffer.alloc(0), log.subarray(0, 40), log.subarray(0, log.length - 3), Buffer.alloc(64, 0xff)]) {
    try {
      parseEventLog(bad);
      assert.unreachable('parsed a broken log');
    } catch (e) {
      assert.ok(isPksError(e) && e.code === 'PKS_BAD_REQUEST', String(e));
    }
  }
});

const stub = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
const measureTool = '/usr/lib/systemd/systemd-measure';
const haveTools = existsSync(stub) && existsSync(measureTool);

test('PCR 11 of a UKI built like uki.sh equals systemd-measure calculate', () => {
  if (!haveTools) {
    console.log('  (skipped: systemd-boot-efi stub or systemd-measure missing)');
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-uki-'));
  try {
    const f = (n: string, data: Buffer | string): string => {
      writeFileSync(path.join(dir, n), data);
      return path.join(dir, n);
    };
    const linux = f('linux', Buffer.alloc(5003, 7));
    const osrel = f('osrel', 'ID=pks-test\n');
    const cmdline = f('cmdline', 'root=PARTUUID=1 console=ttyS0');
    const initrd = f('initrd', Buffer.alloc(3001, 9));
    const uki = path.join(dir, 'uki.efi');
    execFileSync('objcopy', [
      '--add-section', `.osrel=${osrel}`, '--change-section-vma', '.osrel=0x20000',
      '--add-section', `.cmdline=${cmdline}`, '--change-section-vma', '.cmdline=0x30000',
      '--add-section', `.linux=${linux}`, '--change-section-vma', '.linux=0x2000000',
      '--add-section', `.initrd=${initrd}`, '--change-section-vma', '.initrd=0x3000000',
      stub, uki,
    ]);
    const out = JSON.parse(execFileSync(measureTool, ['calculate', `--linux=${linux}`, `--osrel=${osrel}`, `--cmdline=${cmdline}`, `--initrd=${initrd}`, '--bank=sha256', '--phase=sysinit:ready', '--json=short']).toString());
    const want = out.sha256[0].hash as string;
    const got = extend(extend(replay(ukiPcr11Digests(readFileSync(uki))), sha256('sysinit')), sha256('ready'));
    assert.is(got.toString('hex'), want);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the Authenticode digest ignores the checksum and covers the content', () => {
  if (!existsSync(stub)) return;
  const img = readFileSync(stub);
  const d = authenticodeDigest(img);
  const pe = img.readUInt32LE(0x3c);
  const other = Buffer.from(img);
  other.writeUInt32LE(0x12345678, pe + 24 + 64); // CheckSum
  assert.ok(authenticodeDigest(other).equals(d));
  const changed = Buffer.from(img);
  changed[changed.length - 100] ^= 1;
  assert.not.ok(authenticodeDigest(changed).equals(d));
  assert.throws(() => authenticodeDigest(Buffer.from('not a PE image at all, clearly')), (e: unknown) => isPksError(e) && e.code === 'PKS_BAD_REQUEST');
});

test.run();
