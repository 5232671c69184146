// A full data volume: the keystore keeps running, refuses writes with PKS_STORE_FULL and
// changes nothing, keeps answering reads, and recovers by itself once there is space again.
// The volume is a small tmpfs the test mounts (needs root; skipped with a message otherwise).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { startBox } from '../../scripts/plant/box.js';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';

const POOL = 'oem1.full.4';

function canMount(dir: string): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('full disk: coded refusal, nothing changed, still serving, recovers when space returns', async () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'pks-full-'));
  const data = path.join(base, 'keystore', 'data');
  mkdirSync(data, { recursive: true });
  if (!canMount(data)) {
    console.log('  SKIPPED: full-disk test needs root and tmpfs mounts');
    rmSync(base, { recursive: true, force: true });
    return;
  }
  const master = randomBytes(16);
  const box = await startBox({ base, pools: [{ pool: POOL, minimum: 1, reorder: 1 }] });
  await box.registerTesters(['t'], [POOL]);
  try {
    const admin = box.keystore.client('pksctl');
    const stats = async () => (await admin.call<StatsResponse>('stats')).pools[POOL]!;
    let fullAt = -1;
    for (let i = 0; i < 20 && fullAt < 0; i++) {
      const before = await stats();
      try {
        await box.importChunks(box.batch(`b${i}`, { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys(`k${i}`, 2000) }));
      } catch (e) {
        assert.is((e as { code: string }).code, 'PKS_STORE_FULL');
        assert.equal(await stats(), before, 'a refused import changed nothing');
        fullAt = i;
      }
    }
    assert.ok(fullAt > 0, 'the volume filled up');
    assert.is(box.keystore.proc.child.exitCode, null, 'the keystore is still running');
    assert.ok((await stats()).available > 0, 'reads still answer');
    // plant IT makes room: the next write goes through without a restart
    execFileSync('mount', ['-o', 'remount,size=64m', data]);
    const [r] = await box.importChunks(box.batch('after', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys('after', 100) }));
    assert.is(r!.imported, 100);
    const p = await box.keystore.client('tester-api').call<{ packageId: string }>('reserve', { pool: POOL, uid: '01'.repeat(15), tester: 't' });
    assert.ok(p.packageId);
  } finally {
    await box.stop();
    try {
      execFileSync('umount', [data]);
    } catch {
      /* already gone */
    }
    rmSync(base, { recursive: true, force: true });
  }
});

test.run();
