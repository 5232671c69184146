// Issue 10, item 8: the keystore's LMDB map is a starting size, not a cap. A store opened with
// the smallest map the config allows takes more data than the map, growing on demand (lmdb-js
// resizes on MDB_MAP_FULL); only the disk bounds it (full disk: test/keystore/full-disk.test.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDbs } from '../../services/keystore/db.js';

test('a 64 MiB map takes 96 MiB of records and reopens with all of them', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-grow-'));
  try {
    let dbs = openDbs(dir, { mapSizeMb: 64 });
    const blob = Buffer.alloc(4000, 1);
    for (let t = 0; t < 24; t++) {
      await dbs.root.transaction(() => {
        for (let i = 0; i < 1024; i++) dbs.meta.putSync(`g-${t}-${i}`, blob);
      });
    }
    await dbs.root.flushed;
    const stats = dbs.root.getStats() as { mapSize: number };
    assert.ok(stats.mapSize > 64 * 1024 * 1024, `map is ${stats.mapSize}`);
    await dbs.root.close();
    dbs = openDbs(dir, { mapSizeMb: 64 });
    assert.is(dbs.meta.get('g-23-1023')?.toString().length, blob.toString().length);
    assert.is([...dbs.meta.getKeys({ start: 'g-', end: 'g.' })].length, 24 * 1024);
    await dbs.root.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
test.run();
