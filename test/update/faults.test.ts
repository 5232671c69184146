// The safe switch end to end on the host, with power cuts: the updater (its own process, see
// driver.ts) against the real RAUC, bootchooser and TPM floor of rauc-host.ts. A power cut is
// SIGKILL of the updater and of rauc service at once, then a "power-on" (systemd-boot's choice
// and try count) and the updater's start on whatever slot came up. In every case the box ends
// on a good slot with a coded last result, and the floor moves only after mark-good.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readFloor } from '../../services/updater/floor.js';
import { makeBundle, startRaucHost, type RaucHost } from './rauc-host.js';
import { rebooted, result, runUpdater } from './run-updater.js';

let work: string;
test.before(() => {
  work = mkdtempSync(path.join(os.tmpdir(), 'pks-faults-'));
});
test.after(() => rmSync(work, { recursive: true, force: true }));

async function withHost(fn: (h: RaucHost, state: string) => Promise<void>): Promise<void> {
  const h = await startRaucHost({ slotBytes: 8 << 20 });
  try {
    await fn(h, path.join(h.dir, 'updater-state'));
  } finally {
    await h.stop();
  }
}

test('update, reboot, health check, mark good, floor raised; then a downgrade is refused', async () => {
  await withHost(async (h, state) => {
    const b = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'ok.raucb') });
    const r1 = await runUpdater(h, state, { action: 'install', file: b });
    assert.ok(rebooted(r1), JSON.stringify(r1.lines.slice(-3)));
    assert.is(await readFloor(h.tpm.tcti), 1, 'floor untouched before mark-good');
    assert.is(await h.boot(), 'B');
    const r2 = await runUpdater(h, state, { action: 'recover' });
    const s = result(r2)!;
    assert.is(s.last?.ok, true, JSON.stringify(s));
    assert.is(s.last?.slot, 'B');
    assert.is(s.booted.version, '1.1.0');
    assert.is(await readFloor(h.tpm.tcti), 2);
    assert.equal(h.entries(), ['pks-1-A.efi', 'pks-2-B.efi'], 'B blessed (no counter)');
    // older version, same svn: refused by version; older svn: refused by the floor
    const old = makeBundle({ version: '1.0.9', svn: 2, out: path.join(work, 'older.raucb') });
    const r3 = await runUpdater(h, state, { action: 'install', file: old });
    assert.is(r3.lines.find((l) => l.error)?.error, 'PKS_UPDATE_DOWNGRADE');
    const low = makeBundle({ version: '1.5.0', svn: 1, out: path.join(work, 'lowsvn.raucb') });
    const r4 = await runUpdater(h, state, { action: 'install', file: low });
    assert.is(r4.lines.find((l) => l.error)?.error, 'PKS_UPDATE_DOWNGRADE');
    assert.equal(h.entries(), ['pks-1-A.efi', 'pks-2-B.efi']);
  });
});

test('a bundle whose services fail the health check falls back to the old slot; floor unchanged', async () => {
  await withHost(async (h, state) => {
    const b = makeBundle({ version: '1.2.0', svn: 2, out: path.join(work, 'bad.raucb'), marker: 'fail-health' });
    await runUpdater(h, state, { action: 'install', file: b });
    assert.is(await h.boot(), 'B');
    const r = await runUpdater(h, state, { action: 'recover' });
    assert.ok(rebooted(r), 'reboots back after marking B bad');
    assert.is(await h.boot(), 'A');
    const s = result(await runUpdater(h, state, { action: 'recover' }))!;
    assert.is(s.last?.ok, false);
    assert.is(s.last?.code, 'PKS_UPDATE_HEALTH_FAILED');
    assert.match(s.last?.detail ?? '', 'health command');
    assert.is(s.booted.slot, 'A');
    assert.is(s.phase, 'idle');
    assert.is(await readFloor(h.tpm.tcti), 1);
  });
});

test('power cut during install: old slot stays booted, new slot bad, PKS_UPDATE_INTERRUPTED', async () => {
  await withHost(async (h, state) => {
    const b = makeBundle({ version: '1.1.0', svn: 2, bytes: 6 << 20, out: path.join(work, 'big.raucb') });
    const r = await runUpdater(h, state, { action: 'install', file: b }, (l) => l.event?.type === 'update-progress' && l.event.phase === 'installing' && l.event.percent >= 20);
    assert.ok(r.killed && !rebooted(r));
    assert.is(await h.boot(), 'A');
    const s = result(await runUpdater(h, state, { action: 'recover' }))!;
    assert.is(s.booted.slot, 'A');
    assert.is(s.phase, 'idle');
    assert.is(s.last?.code, 'PKS_UPDATE_INTERRUPTED', JSON.stringify(s));
    assert.ok(h.entries().some((e) => /^pks-\d+-B\+0-/.test(e)), h.entries().join(' '));
    // and the box can still take the update afterwards
    const again = await runUpdater(h, state, { action: 'install', file: makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'again.raucb') }) });
    assert.ok(rebooted(again));
  });
});

test('power cut before the reboot: the next power-on boots the new slot and completes', async () => {
  await withHost(async (h, state) => {
    const b = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'pre-reboot.raucb') });
    const r = await runUpdater(h, state, { action: 'install', file: b }, (l) => l.event?.type === 'update-progress' && l.event.phase === 'rebooting');
    assert.ok(r.killed);
    assert.is(await h.boot(), 'B');
    const s = result(await runUpdater(h, state, { action: 'recover' }))!;
    assert.is(s.last?.ok, true, JSON.stringify(s));
    assert.is(await readFloor(h.tpm.tcti), 2);
  });
});

test('power cut before mark-good, then the new slot never comes up: tries run out, the box falls back', async () => {
  await withHost(async (h, state) => {
    const b = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'pre-good.raucb') });
    await runUpdater(h, state, { action: 'install', file: b });
    assert.is(await h.boot(), 'B');
    // cut while checking: not marked good, floor not raised
    const r = await runUpdater(h, state, { action: 'recover' }, (l) => l.event?.type === 'update-progress' && l.event.phase === 'checking');
    assert.ok(r.killed);
    assert.is(await readFloor(h.tpm.tcti), 1);
    // two more boots of B die before the updater runs (first-boot power cuts)
    assert.is(await h.boot(), 'B');
    assert.is(await h.boot(), 'B');
    assert.is(await h.boot(), 'A', 'three tries used up');
    const s = result(await runUpdater(h, state, { action: 'recover' }))!;
    assert.is(s.booted.slot, 'A');
    assert.is(s.last?.code, 'PKS_UPDATE_HEALTH_FAILED', JSON.stringify(s));
    assert.is(await readFloor(h.tpm.tcti), 1);
  });
});

test('power cut before mark-good, next boot succeeds: marked good once healthy', async () => {
  await withHost(async (h, state) => {
    const b = makeBundle({ version: '1.1.0', svn: 2, out: path.join(work, 'pre-good2.raucb') });
    await runUpdater(h, state, { action: 'install', file: b });
    await h.boot();
    await runUpdater(h, state, { action: 'recover' }, (l) => l.event?.type === 'update-progress' && l.event.phase === 'checking');
    assert.is(await h.boot(), 'B');
    const s = result(await runUpdater(h, state, { action: 'recover' }))!;
    assert.is(s.last?.ok, true, JSON.stringify(s));
    assert.equal(h.entries(), ['pks-1-A.efi', 'pks-2-B.efi']);
  });
});

test.run();
