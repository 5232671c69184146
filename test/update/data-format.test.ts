// The data partition's fallback story (appliance/data-format.ts): no migration before
// mark-good, so a fallback reads the data as it was; after it, forward-only steps, durable one
// by one; an old slot refuses the newer format with a coded error instead of misreading it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isPksError } from '../../appliance/errors.js';
import { allowMigrations, migrationsAllowed, openDataFormat, readFormat, type Migration } from '../../appliance/data-format.js';

test('before mark-good nothing moves; after it v2 migrates; the old slot then fails closed', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-df-'));
  const upd = mkdtempSync(path.join(os.tmpdir(), 'pks-df-upd-'));
  try {
    writeFileSync(path.join(dir, 'data.json'), '{"a":1}');
    const steps: Migration[] = [{ to: 2, run: (d) => writeFileSync(path.join(d, 'data.json'), '{"a":1,"b":2}') }];
    // new slot (knows format 2), not yet marked good: reads format 1 as it is
    assert.is(await openDataFormat(dir, 2, steps, migrationsAllowed(upd, '1.1.0')), 1);
    assert.is(readFileSync(path.join(dir, 'data.json'), 'utf8'), '{"a":1}');
    // a fallback here: the old slot (format 1) opens the untouched data
    assert.is(await openDataFormat(dir, 1, [], false), 1);
    // marked good: the updater allows, the service migrates
    allowMigrations(upd, '1.1.0');
    assert.is(await openDataFormat(dir, 2, steps, migrationsAllowed(upd, '1.1.0')), 2);
    assert.is(readFormat(dir), 2);
    // a later fallback to the old slot: refused, coded, nothing rewritten
    let code = '';
    try {
      await openDataFormat(dir, 1, [], true);
    } catch (e) {
      code = isPksError(e) ? e.code : String(e);
    }
    assert.is(code, 'PKS_DATA_FORMAT_NEWER');
    assert.is(readFileSync(path.join(dir, 'data.json'), 'utf8'), '{"a":1,"b":2}');
    assert.not.ok(migrationsAllowed(upd, '1.2.0'), 'the marker names one version');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(upd, { recursive: true, force: true });
  }
});

test.run();
