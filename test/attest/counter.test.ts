// Issue 12, item 4: the updater's version floor is a TPM NV counter (nt=1) defined at setup: it
// only goes up, survives a reboot, and setup run twice does not reset it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { defineVersionCounter, incrementVersionCounter, readVersionCounter, VERSION_FLOOR_NV } from '../../services/attest/counter.js';
import { startSwtpm } from './swtpm.js';

test('version floor: defined once, monotonic, kept across reboots, not redefinable as a plain index', async () => {
  const t = await startSwtpm();
  try {
    assert.is(await defineVersionCounter(t.tcti), 1n);
    assert.is(await incrementVersionCounter(t.tcti), 2n);
    await t.restart();
    assert.is(await readVersionCounter(t.tcti), 2n, 'survives a reboot');
    assert.is(await defineVersionCounter(t.tcti), 2n, 'setup again keeps the floor');
    // a counter cannot be written: the only way is up
    const write = await new Promise<boolean>((r) => execFile('tpm2_nvwrite', ['-T', t.tcti, '-C', 'o', '-i', '/dev/zero', VERSION_FLOOR_NV], (e) => r(!e)));
    assert.not.ok(write, 'TPM2_NV_Write on a counter is refused');
    assert.is(await readVersionCounter(t.tcti), 2n);
  } finally {
    await t.stop();
  }
});

test('an existing index of another type at the floor\'s number is refused', async () => {
  const t = await startSwtpm();
  try {
    await new Promise<void>((r, j) => execFile('tpm2_nvdefine', ['-T', t.tcti, VERSION_FLOOR_NV, '-C', 'o', '-s', '8', '-a', 'ownerread|ownerwrite'], (e) => (e ? j(e) : r())));
    await defineVersionCounter(t.tcti).then(
      () => assert.unreachable('accepted an ordinary index'),
      (e: Error) => assert.match(e.message, /not a counter/),
    );
  } finally {
    await t.stop();
  }
});

test.run();
