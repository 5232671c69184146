// Issue 10 finding: during a drain the stock-low alert was raised and resolved 18 times in a
// minute. Every threshold alert now has hysteresis: it resolves (or de-escalates) only once the
// value is past the threshold by the check's margin, or has stayed on the better side for the
// hold time (resolveHoldMinutes).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LmdbAlertStore } from '../../services/sentinel/alert-store.js';
import { AlertEngine, type AlertEvent } from '../../services/sentinel/alerts.js';
import { checkAuthFailures, checkServices, checkStock, checkStorage, checkUplink } from '../../services/sentinel/checks.js';

const T0 = Date.parse('2030-03-01T08:00:00Z');
const at = (s: number): Date => new Date(T0 + s * 1000);

const t = suite<{ dir: string; store: LmdbAlertStore; engine: AlertEngine; events: AlertEvent[] }>('alert hysteresis');
t.before.each((ctx) => {
  ctx.dir = mkdtempSync(path.join(tmpdir(), 'pks-hyst-'));
  ctx.store = new LmdbAlertStore({ path: path.join(ctx.dir, 'alerts.lmdb') });
  ctx.events = [];
  ctx.engine = new AlertEngine({ store: ctx.store, flapMinutes: 0, reminderMinutes: 0, resolveHoldMinutes: 10, onEvent: (e) => void ctx.events.push(e) });
});
t.after.each(async (ctx) => {
  await ctx.store.close();
  rmSync(ctx.dir, { recursive: true, force: true });
});

const stock = (available: number) => checkStock([{ pool: 'oem1.bcm.key4', available, minimum: 1000, critical: 200, burnRatePerDay: 5000 }]);
const count = (events: AlertEvent[], type: string) => events.filter((e) => e.type === type).length;

t('a drain hovering at the minimum is one alert for the minute, not 18 raises and resolutions', async ({ engine, events }) => {
  for (let s = 0; s < 60; s += 2) await engine.evaluate(stock(s % 4 === 0 ? 995 : 1003), at(s));
  assert.is(count(events, 'raised'), 1);
  assert.is(count(events, 'resolved'), 0);
  // past the margin (10 % of the minimum) it resolves at once
  await engine.evaluate(stock(1101), at(62));
  assert.is(count(events, 'resolved'), 1);
});

t('inside the margin, an alert resolves after the hold time on the better side', async ({ engine, events }) => {
  await engine.evaluate(stock(900), at(0));
  await engine.evaluate(stock(1050), at(60));
  await engine.evaluate(stock(1050), at(300));
  assert.is(count(events, 'resolved'), 0);
  await engine.evaluate(stock(990), at(400)); // below again: the hold starts over
  await engine.evaluate(stock(1050), at(460));
  await engine.evaluate(stock(1050), at(460 + 590));
  assert.is(count(events, 'resolved'), 0);
  await engine.evaluate(stock(1050), at(460 + 601));
  assert.is(count(events, 'resolved'), 1);
});

t('critical to warning has the same hysteresis', async ({ engine, events }) => {
  await engine.evaluate(stock(150), at(0));
  for (let s = 10; s < 120; s += 10) await engine.evaluate(stock(s % 20 ? 205 : 195), at(s));
  assert.is(count(events, 'deescalated'), 0);
  await engine.evaluate(stock(300), at(130));
  assert.is(count(events, 'deescalated'), 1);
});

t('every threshold check marks the band inside its margin', () => {
  const now = at(0);
  assert.ok(checkUplink({ lastSyncAt: new Date(now.getTime() - 58 * 60_000), maxAgeMinutes: 60 }, now).within);
  assert.not.ok(checkUplink({ lastSyncAt: new Date(now.getTime() - 10 * 60_000), maxAgeMinutes: 60 }, now).within);
  const fails = (n: number) => Array.from({ length: n }, () => ({ at: now, source: 'x' }));
  assert.ok(checkAuthFailures(fails(19), now, { threshold: 20 }).within);
  assert.not.ok(checkAuthFailures(fails(5), now, { threshold: 20 }).within);
  assert.ok(checkServices([{ name: 'keystore', healthy: true, lastSeen: new Date(now.getTime() - 115_000) }], now)[0]!.within);
  const [map, disk] = checkStorage({ maps: [{ name: 'ks', mapSize: 100, usedBytes: 78 }], disks: [{ path: '/d', freeBytes: 2.1 * 1024 ** 3, totalBytes: 100 * 1024 ** 3 }] });
  assert.ok(map!.within && disk!.within);
  assert.ok(stock(1050)[0]!.within);
  assert.not.ok(stock(5000)[0]!.within);
});
t.run();
