// Alert engine rules against the real LMDB store (no SMTP here: mail.test.ts covers delivery).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isPksError } from '../../appliance/errors.js';
import { LmdbAlertStore } from '../../services/sentinel/alert-store.js';
import { AlertEngine, type AlertEngineOptions, type AlertEvent, type AlertMail, type Level, type Observation } from '../../services/sentinel/alerts.js';

const T0 = Date.parse('2030-03-01T08:00:00Z');
const min = (m: number): Date => new Date(T0 + m * 60_000);
const o = (key: string, severity: Level, message = `${key} is ${severity}`): Observation => {
  const i = key.indexOf(':');
  return { key, kind: key.slice(0, i), subject: key.slice(i + 1), severity, message, action: 'do something' };
};
const kinds = (mails: AlertMail[]): string[] => mails.map((m) => m.items.map((i) => `${i.type}:${i.alert.key}`).join('+'));

interface Ctx {
  dir: string;
  store: LmdbAlertStore;
  engine: AlertEngine;
  events: AlertEvent[];
  make(opts?: Partial<AlertEngineOptions>): AlertEngine;
}

const t = suite<Ctx>('alert engine', {} as Ctx);
t.before.each(async (ctx) => {
  ctx.dir = mkdtempSync(path.join(tmpdir(), 'pks-alerts-'));
  ctx.store = new LmdbAlertStore({ path: path.join(ctx.dir, 'alerts.lmdb') });
  ctx.events = [];
  ctx.make = (opts = {}) =>
    new AlertEngine({ store: ctx.store, reminderMinutes: 60, flapMinutes: 10, maxMailsPerRun: 5, onEvent: (e) => void ctx.events.push(e), ...opts });
  ctx.engine = ctx.make();
});
t.after.each(async (ctx) => {
  await ctx.store.close();
  rmSync(ctx.dir, { recursive: true, force: true });
});

t('raise, unchanged, escalate, de-escalate, resolve: one mail per change, none for no change', async ({ engine, store, events }) => {
  const k = 'stock-low:oem1.ecuA.4';
  let r = await engine.evaluate([o(k, 'warning')], min(0));
  assert.equal(kinds(r.mails), [`raised:${k}`]);
  assert.is(r.mails[0]!.severity, 'warning');
  r = await engine.evaluate([o(k, 'warning', 'other numbers')], min(20));
  assert.equal(r.mails, [], 'unchanged level: no mail even when the message text moves');
  assert.is(store.load()[0]!.message, 'other numbers');
  r = await engine.evaluate([o(k, 'critical')], min(40));
  assert.equal(kinds(r.mails), [`escalated:${k}`]);
  assert.is(r.mails[0]!.severity, 'critical');
  r = await engine.evaluate([o(k, 'critical')], min(50));
  assert.equal(r.mails, []);
  r = await engine.evaluate([o(k, 'warning')], min(80));
  assert.equal(kinds(r.mails), [`deescalated:${k}`]);
  assert.is(r.mails[0]!.severity, 'critical', 'critical recipients hear it is no longer critical');
  r = await engine.evaluate([o(k, 'ok')], min(100));
  assert.equal(kinds(r.mails), [`resolved:${k}`]);
  assert.is(r.open.length, 0);
  r = await engine.evaluate([o(k, 'ok')], min(120));
  assert.equal(r.mails, []);
  assert.equal(events.map((e) => e.type), ['raised', 'escalated', 'deescalated', 'resolved']);
  assert.equal(store.history(10).map((e) => e.type), ['resolved', 'deescalated', 'escalated', 'raised']);
  assert.is(store.load().length, 0, 'resolved and settled alerts are dropped from the live set');
  assert.is(store.pendingMails().length, 4, 'every decided mail is queued for the mailer');
});

t('ok for an unknown subject does nothing', async ({ engine, store }) => {
  const r = await engine.evaluate([o('hsm:vault', 'ok')], min(0));
  assert.equal(r.mails, []);
  assert.equal(r.events, []);
  assert.is(store.load().length, 0);
});

t('reminder for open critical alerts every reminderMinutes, not for warnings', async ({ engine, store }) => {
  const c = 'hsm:vault';
  const w = 'uplink-stale:kms';
  // what the mailer does after each run with SMTP up
  const delivered = async (): Promise<void> => {
    for (const m of store.pendingMails()) await store.removeMail(m.id);
  };
  let r = await engine.evaluate([o(c, 'critical'), o(w, 'warning')], min(0));
  assert.is(r.mails.length, 2);
  await delivered();
  r = await engine.evaluate([o(c, 'critical'), o(w, 'warning')], min(59));
  assert.equal(r.mails, []);
  r = await engine.evaluate([o(c, 'critical'), o(w, 'warning')], min(60));
  assert.equal(kinds(r.mails), [`reminder:${c}`]);
  r = await engine.evaluate([o(c, 'critical'), o(w, 'warning')], min(61));
  assert.equal(r.mails, []);
  // SMTP down: the reminder is still queued, so the next one is not added behind it
  r = await engine.evaluate([], min(120));
  assert.equal(r.mails, [], 'no second reminder while the first one waits');
  await delivered();
  r = await engine.evaluate([], min(121));
  assert.equal(kinds(r.mails), [`reminder:${c}`], 'reminders do not depend on the check running');
  await delivered();
  r = await engine.evaluate([o(c, 'critical')], min(125));
  assert.equal(r.mails, []);
});

t('flapping: resolve then re-raise within flapMinutes holds the mail until stable', async ({ engine, events }) => {
  const k = 'service:uplink';
  let r = await engine.evaluate([o(k, 'warning')], min(0));
  assert.is(r.mails.length, 1);
  r = await engine.evaluate([o(k, 'ok')], min(20));
  assert.equal(kinds(r.mails), [`resolved:${k}`]);
  r = await engine.evaluate([o(k, 'warning')], min(22));
  assert.equal(r.mails, [], 're-raise 2 minutes after the resolution is held');
  assert.is(r.held, 1);
  r = await engine.evaluate([o(k, 'ok')], min(23));
  assert.equal(r.mails, [], 'back to what ops know: nothing to say');
  assert.is(r.held, 0);
  r = await engine.evaluate([o(k, 'warning')], min(24));
  r = await engine.evaluate([o(k, 'warning')], min(30));
  assert.equal(r.mails, [], 'still inside the damping window');
  r = await engine.evaluate([o(k, 'warning')], min(34));
  assert.equal(kinds(r.mails), [`raised:${k}`], 'stable for flapMinutes: mailed once');
  assert.is(r.mails[0]!.items[0]!.alert.raisedAt, min(24).toISOString());
  r = await engine.evaluate([o(k, 'warning')], min(40));
  assert.equal(r.mails, []);
  assert.equal(events.map((e) => e.type), ['raised', 'resolved', 'raised', 'resolved', 'raised'], 'events are not damped');
});

t('flapping between warning and critical does not flood', async ({ engine }) => {
  const k = 'stock-low:p1';
  const sent: string[] = [];
  for (let m = 0; m < 30; m++) {
    const r = await engine.evaluate([o(k, m === 0 ? 'warning' : m % 2 ? 'critical' : 'warning')], min(m));
    sent.push(...kinds(r.mails));
  }
  assert.equal(sent, [`raised:${k}`, `escalated:${k}`]);
});

t('per-run cap: the most urgent go alone, the rest in one digest', async ({ engine, store }) => {
  const obs = [
    ...Array.from({ length: 6 }, (_, i) => o(`stock-low:w${i}`, 'warning')),
    ...Array.from({ length: 3 }, (_, i) => o(`cert-expiry:c${i}`, 'critical')),
  ];
  const r = await engine.evaluate(obs, min(0));
  assert.is(r.mails.length, 5);
  assert.equal(kinds(r.mails.slice(0, 3)), ['raised:cert-expiry:c0', 'raised:cert-expiry:c1', 'raised:cert-expiry:c2']);
  assert.is(r.mails[4]!.items.length, 5, 'digest carries the rest');
  assert.is(r.mails[4]!.severity, 'warning');
  assert.is(store.pendingMails().length, 5);
  const again = await engine.evaluate(obs, min(1));
  assert.equal(again.mails, [], 'everything was told once');
});

t('complete kinds: an alert whose subject disappeared is resolved', async ({ engine }) => {
  await engine.evaluate([o('cert-expiry:a', 'warning'), o('stock-low:p', 'warning')], min(0));
  const r = await engine.evaluate([], min(30), { complete: ['cert-expiry'] });
  assert.equal(kinds(r.mails), ['resolved:cert-expiry:a']);
  assert.match(r.mails[0]!.items[0]!.alert.message, /no longer monitored/);
  assert.equal(r.open.map((a) => a.key), ['stock-low:p']);
});

t('state survives a restart: same store, new engine, no repeated mails', async (ctx) => {
  await ctx.engine.evaluate([o('hsm:vault', 'critical')], min(0));
  await ctx.store.close();
  ctx.store = new LmdbAlertStore({ path: path.join(ctx.dir, 'alerts.lmdb') });
  const engine = ctx.make();
  let r = await engine.evaluate([o('hsm:vault', 'critical')], min(5));
  assert.equal(r.mails, []);
  r = await engine.evaluate([o('hsm:vault', 'ok')], min(20));
  assert.equal(kinds(r.mails), ['resolved:hsm:vault']);
  assert.is(ctx.store.pendingMails().length, 2);
});

t('bad observations are refused with a coded error and change nothing', async ({ engine, store }) => {
  const bad: unknown[] = [
    [{ ...o('hsm:vault', 'critical'), key: 'hsm:other' }],
    [{ ...o('hsm:vault', 'critical'), severity: 'fatal' }],
    [{ ...o('hsm:vault', 'critical'), kind: 'HSM!' , key: 'HSM!:vault'}],
    [o('hsm:vault', 'critical'), o('hsm:vault', 'ok')],
    [null],
  ];
  for (const b of bad) {
    try {
      await engine.evaluate(b as Observation[], min(0));
      assert.unreachable('accepted');
    } catch (e) {
      assert.ok(isPksError(e) && e.code === 'PKS_BAD_REQUEST', String(e));
    }
  }
  assert.is(store.load().length, 0);
  assert.is(store.pendingMails().length, 0);
  assert.throws(() => new AlertEngine({ store, maxMailsPerRun: 0 }), /PKS_CONFIG_INVALID/);
});

t('onEvent failures do not lose state', async (ctx) => {
  const engine = ctx.make({ onEvent: () => { throw new Error('uplink outbox full'); } });
  const r = await engine.evaluate([o('hsm:vault', 'critical')], min(0));
  assert.is(r.eventErrors, 1);
  assert.is(ctx.store.history(5).length, 1);
  assert.is(ctx.store.load().length, 1);
});

t.run();
