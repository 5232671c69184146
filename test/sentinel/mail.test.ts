// End to end: checks -> alert engine -> LMDB outbox -> nodemailer -> a real SMTP server.
import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { LmdbAlertStore } from '../../services/sentinel/alert-store.js';
import { AlertEngine, type Observation } from '../../services/sentinel/alerts.js';
import {
  checkAuthFailures, checkCertificates, checkGrants, checkHsm, checkServices, checkStock, checkStorage, checkUplink,
} from '../../services/sentinel/checks.js';
import { Mailer, renderMail, validateMailerConfig, type MailerConfig } from '../../services/sentinel/mailer.js';
import { startSmtp, type ReceivedMail, type TestSmtp } from '../helpers/smtp.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
const T0 = Date.parse('2030-03-01T08:00:00Z');
const DAY = 86_400_000;
const min = (m: number): Date => new Date(T0 + m * 60_000);
const WARN_TO = ['it@plant.example'];
const CRIT_TO = ['oncall@plant.example', 'it@plant.example'];
const TAG = '[PKS plant-1/pks-01]';

function config(port: number, extra: Partial<MailerConfig> = {}): MailerConfig {
  return {
    host: '127.0.0.1', port, secure: false, starttls: 'off', from: 'pks-01@plant.example',
    to: { warning: ['it@plant.example'], critical: ['oncall@plant.example'] },
    site: 'plant-1', box: 'pks-01', timeoutMs: 3000, ...extra,
  };
}

interface Rig {
  dir: string;
  store: LmdbAlertStore;
  engine: AlertEngine;
  mailer: Mailer;
  /** One sentinel run: evaluate, then flush; returns the mails the server received in it. */
  run(obs: Observation[], now: Date): Promise<ReceivedMail[]>;
  close(): Promise<void>;
}

function rig(smtp: TestSmtp, extra: Partial<MailerConfig> = {}): Rig {
  const dir = mkdtempSync(path.join(tmpdir(), 'pks-mail-'));
  const store = new LmdbAlertStore({ path: path.join(dir, 'alerts.lmdb') });
  const engine = new AlertEngine({ store, reminderMinutes: 60, flapMinutes: 10, maxMailsPerRun: 5 });
  const mailer = new Mailer(config(smtp.port, extra), store, { backoffBaseMs: 60_000 });
  return {
    dir, store, engine, mailer,
    async run(obs, now) {
      const before = smtp.mails.length;
      await engine.evaluate(obs, now);
      await mailer.flush(now);
      return smtp.mails.slice(before);
    },
    async close() {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let keys: webcrypto.CryptoKeyPair;
async function certPem(daysLeft: number): Promise<string> {
  keys ??= (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '02', name: 'CN=tester-ca', notBefore: new Date(T0 - 400 * DAY), notAfter: new Date(T0 + daysLeft * DAY),
    keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return c.toString('pem');
}

// ------------------------------------------------------------------ every alert kind

interface KindCase {
  name: string;
  severity: 'warning' | 'critical';
  subject: string;
  bad(now: Date): Promise<Observation[]> | Observation[];
  good(now: Date): Promise<Observation[]> | Observation[];
}

const GiB = 1024 ** 3;
const CASES: KindCase[] = [
  {
    name: 'certificate expiry', severity: 'warning', subject: 'certificate expiring on tester-ca',
    bad: async (now) => checkCertificates([{ name: 'tester-ca', pem: await certPem(20) }], now),
    good: async (now) => checkCertificates([{ name: 'tester-ca', pem: await certPem(300) }], now),
  },
  {
    name: 'grant expiry', severity: 'critical', subject: 'tester grant expiring on eol-3',
    bad: (now) => checkGrants([{ tester: 'eol-3', expiresAt: new Date(T0 + DAY) }], now),
    good: (now) => checkGrants([{ tester: 'eol-3', expiresAt: new Date(T0 + 90 * DAY) }], now),
  },
  {
    name: 'stock low', severity: 'warning', subject: 'stock low on oem1.ecuA.2',
    bad: () => checkStock([{ pool: 'oem1.ecuA.2', available: 800, minimum: 1000, critical: 200, burnRatePerDay: 400 }]),
    good: () => checkStock([{ pool: 'oem1.ecuA.2', available: 5000, minimum: 1000, critical: 200, burnRatePerDay: 400 }]),
  },
  {
    name: 'stock critical', severity: 'critical', subject: 'stock low on oem1.ecuA.4',
    bad: () => checkStock([{ pool: 'oem1.ecuA.4', available: 100, minimum: 1000, critical: 200, burnRatePerDay: 400 }]),
    good: () => checkStock([{ pool: 'oem1.ecuA.4', available: 5000, minimum: 1000, critical: 200, burnRatePerDay: 400 }]),
  },
  {
    name: 'storage', severity: 'critical', subject: 'storage filling up on disk:/var/lib/pks',
    bad: () => checkStorage({ maps: [], disks: [{ path: '/var/lib/pks', freeBytes: 100 * 1024 ** 2, totalBytes: 20 * GiB }] }),
    good: () => checkStorage({ maps: [], disks: [{ path: '/var/lib/pks', freeBytes: 15 * GiB, totalBytes: 20 * GiB }] }),
  },
  {
    name: 'HSM', severity: 'critical', subject: 'HSM not usable on vault',
    bad: () => [checkHsm({ reachable: false, loggedIn: false })],
    good: () => [checkHsm({ reachable: true, loggedIn: true })],
  },
  {
    name: 'uplink stale', severity: 'warning', subject: 'KMS link stale on kms',
    bad: (now) => [checkUplink({ lastSyncAt: new Date(T0 - 90 * 60_000), maxAgeMinutes: 60 }, now)],
    good: (now) => [checkUplink({ lastSyncAt: new Date(now.getTime() - 60_000), maxAgeMinutes: 60 }, now)],
  },
  {
    name: 'auth burst', severity: 'warning', subject: 'failed tester logins on tester-api',
    bad: (now) => [checkAuthFailures(Array.from({ length: 30 }, () => ({ at: new Date(now.getTime() - 1000), source: '10.1.2.3' })), now, { threshold: 20 })],
    good: (now) => [checkAuthFailures([], now, { threshold: 20 })],
  },
  {
    name: 'service health', severity: 'critical', subject: 'service unhealthy on uplink',
    bad: (now) => checkServices([{ name: 'uplink', healthy: false, lastSeen: now }], now),
    good: (now) => checkServices([{ name: 'uplink', healthy: true, lastSeen: now }], now),
  },
];

interface Ctx {
  smtp: TestSmtp;
}
const kinds = suite<Ctx>('alert kinds over SMTP', {} as Ctx);
kinds.before(async (ctx) => {
  ctx.smtp = await startSmtp();
});
kinds.after(async (ctx) => {
  await ctx.smtp.stop();
});

for (const c of CASES) {
  kinds(`${c.name}: raised once, quiet while unchanged, resolved once`, async ({ smtp }) => {
    const r = rig(smtp);
    try {
      const raised = await r.run(await c.bad(min(0)), min(0));
      assert.is(raised.length, 1, 'one mail on raise');
      const m = raised[0]!;
      assert.is(m.subject, `${TAG} ${c.severity.toUpperCase()} raised: ${c.subject}`);
      assert.equal(m.to, c.severity === 'critical' ? CRIT_TO : WARN_TO);
      assert.is(m.from, 'pks-01@plant.example');
      assert.is(m.headers.get('x-pks-severity'), c.severity);
      assert.match(m.text, /Where: +site plant-1, box pks-01/);
      assert.match(m.text, new RegExp(`Since: +${min(0).toISOString()}`));
      assert.match(m.text, /To do: +\S/);

      assert.is((await r.run(await c.bad(min(5)), min(5))).length, 0, 'unchanged: nothing');

      const resolved = await r.run(await c.good(min(30)), min(30));
      assert.is(resolved.length, 1, 'one mail on resolution');
      assert.is(resolved[0]!.subject, `${TAG} RESOLVED: ${c.subject}`);
      assert.equal(resolved[0]!.to, c.severity === 'critical' ? CRIT_TO : WARN_TO);

      assert.is((await r.run(await c.good(min(40)), min(40))).length, 0);
      assert.is(r.store.pendingMails().length, 0, 'outbox empty after delivery');
    } finally {
      await r.close();
    }
  });
}

kinds('escalation mails once, reminder after the interval, not before', async ({ smtp }) => {
  const r = rig(smtp);
  const stock = (available: number) => checkStock([{ pool: 'oem1.ecuA.4', available, minimum: 1000, critical: 200, burnRatePerDay: 400 }]);
  try {
    assert.is((await r.run(stock(900), min(0))).length, 1);
    const esc = await r.run(stock(150), min(10));
    assert.equal(esc.map((m) => m.subject), [`${TAG} CRITICAL escalated: stock low on oem1.ecuA.4`]);
    assert.equal(esc[0]!.to, CRIT_TO);
    assert.is((await r.run(stock(140), min(20))).length, 0, 'still critical: nothing');
    assert.is((await r.run(stock(130), min(69))).length, 0, 'reminder not yet due');
    const rem = await r.run(stock(120), min(70));
    assert.equal(rem.map((m) => m.subject), [`${TAG} CRITICAL still open: stock low on oem1.ecuA.4`]);
    assert.match(rem[0]!.text, /120 keys available/);
    assert.is((await r.run(stock(110), min(80))).length, 0);
  } finally {
    await r.close();
  }
});

kinds('header injection through a subject adds no header and no recipient', async ({ smtp }) => {
  const r = rig(smtp);
  try {
    const evil = 'p1\r\nBcc: evil@x\r\nX-Evil: 1\n\nbody';
    const obs: Observation = {
      key: `stock-low:${evil}`, kind: 'stock-low', subject: evil, severity: 'critical',
      message: 'm\r\nBcc: evil@x', action: 'a\r\n.\r\nMAIL FROM:<evil@x>',
    };
    const got = await r.run([obs], min(0));
    assert.is(got.length, 1);
    const m = got[0]!;
    assert.equal(m.to, CRIT_TO, 'envelope recipients unchanged');
    assert.not.ok(m.headers.has('bcc'));
    assert.not.ok(m.headers.has('x-evil'));
    assert.not.match(m.raw, /^(Bcc|X-Evil|MAIL FROM):/im, 'not in the header, and no fake lines in the body either');
    assert.match(m.text, /Detail: +m Bcc: evil@x\n/);
    assert.is(m.headers.get('to'), 'oncall@plant.example, it@plant.example');
    assert.is(m.subject, `${TAG} CRITICAL raised: stock low on p1 Bcc: evil@x X-Evil: 1 body`);
    // and through the checks, names are flattened before they reach the engine
    const got2 = await r.run(checkGrants([{ tester: 'eol\r\nBcc: evil@x', expiresAt: new Date(T0) }], min(1)), min(1));
    assert.is(got2.length, 1);
    assert.not.ok(got2[0]!.headers.has('bcc'));
    assert.equal(got2[0]!.to, CRIT_TO);
  } finally {
    await r.close();
  }
});

kinds('too many changes at once: capped, rest in one digest', async ({ smtp }) => {
  const r = rig(smtp);
  try {
    const pools = Array.from({ length: 8 }, (_, i) => ({ pool: `oem1.p${i}`, available: 10, minimum: 100, critical: i < 2 ? 50 : 5, burnRatePerDay: 1 }));
    const got = await r.run(checkStock(pools), min(0));
    assert.is(got.length, 5, 'maxMailsPerRun');
    assert.is(got[4]!.subject, `${TAG} WARNING: 4 alert changes`);
    assert.equal(got[4]!.to, WARN_TO);
    assert.is((got[4]!.text.match(/^What:/gm) ?? []).length, 4);
  } finally {
    await r.close();
  }
});

kinds.run();

// ------------------------------------------------------------------ delivery

const delivery = suite('mail delivery');

delivery('SMTP down: alerts kept and queued, retried with backoff, sent exactly once when up', async () => {
  const smtp = await startSmtp();
  const r = rig(smtp);
  try {
    await smtp.down();
    const hsm = (ok: boolean) => [checkHsm({ reachable: ok, loggedIn: ok })];
    assert.is((await r.run(hsm(false), min(0))).length, 0);
    let q = r.store.pendingMails();
    assert.is(q.length, 1);
    assert.is(q[0]!.attempts, 1);
    assert.match(q[0]!.lastError ?? '', /^E(CONNECTION|SOCKET)$/);
    assert.is(q[0]!.nextAttemptAt, min(1).toISOString());
    assert.is(r.engine.open().length, 1, 'alert kept');

    // second run, still down, backoff doubles; the resolution is queued behind the raise
    assert.is((await r.run(hsm(true), min(1))).length, 0);
    q = r.store.pendingMails();
    assert.equal(q.map((m) => m.attempts), [2, 1]);
    assert.is(q[0]!.nextAttemptAt, min(3).toISOString());

    await smtp.up();
    let res = await r.mailer.flush(min(2));
    assert.equal(res, { sent: 0, failed: 0, pending: 2 }, 'not due yet: backoff respected');
    res = await r.mailer.flush(min(3));
    assert.equal(res, { sent: 2, failed: 0, pending: 0 });
    assert.equal(smtp.mails.map((m) => m.subject), [`${TAG} CRITICAL raised: HSM not usable on vault`, `${TAG} RESOLVED: HSM not usable on vault`]);
    assert.match(smtp.mails[0]!.text, new RegExp(`Since: +${min(0).toISOString()}`), 'the mail says when it started, not when it was sent');
    assert.match(smtp.mails[0]!.headers.get('message-id') ?? '', /^<[0-9a-f]{32}@pks-01\.plant-1\.pks\.invalid>$/);

    res = await r.mailer.flush(min(60));
    assert.equal(res, { sent: 0, failed: 0, pending: 0 });
    assert.is(smtp.mails.length, 2, 'no duplicates after success');
  } finally {
    await r.close();
    await smtp.stop();
  }
});

delivery('a rejected recipient keeps that mail queued without blocking the others', async () => {
  const smtp = await startSmtp();
  const r = rig(smtp);
  try {
    const q = { id: 'x', attempts: 0, nextAttemptAt: min(0).toISOString(), mail: renderless('hsm:vault') };
    await r.store.updateMail(q);
    // a server that refuses every RCPT: simulate with a mailer whose recipients the server rejects
    const refusing = await startSmtpRefusing();
    const m2 = new Mailer(config(refusing.port), r.store);
    const res = await m2.flush(min(0));
    assert.is(res.sent, 0);
    assert.is(res.failed, 1);
    assert.match(r.store.pendingMails()[0]!.lastError ?? '', /^EENVELOPE/);
    await refusing.stop();
    assert.equal(await r.mailer.flush(min(2)), { sent: 1, failed: 0, pending: 0 });
  } finally {
    await r.close();
    await smtp.stop();
  }
});

delivery('STARTTLS required with AUTH works; a wrong password or a server without STARTTLS sends nothing', async () => {
  const auth = { user: 'pks', pass: 's3cret-pass' };
  const smtp = await startSmtp({ auth, starttls: true });
  const r = rig(smtp, { starttls: 'required', auth, tls: { ca: smtp.ca! } });
  const plain = await startSmtp({ auth });
  try {
    const got = await r.run([checkHsm({ reachable: false, loggedIn: true })], min(0));
    assert.is(got.length, 1);
    assert.is(got[0]!.subject, `${TAG} CRITICAL raised: HSM not usable on vault`);
    assert.ok(got[0]!.secure, 'sent over STARTTLS');
    assert.is(got[0]!.user, 'pks');

    const wrong = new Mailer(config(smtp.port, { starttls: 'required', auth: { user: 'pks', pass: 'nope' }, tls: { ca: smtp.ca! } }), r.store);
    await r.engine.evaluate([checkHsm({ reachable: true, loggedIn: true })], min(30));
    assert.equal(await wrong.flush(min(30)), { sent: 0, failed: 1, pending: 1 });
    assert.match(r.store.pendingMails()[0]!.lastError ?? '', /^EAUTH/);

    const noTls = new Mailer(config(plain.port, { starttls: 'required', auth }), r.store);
    assert.equal(await noTls.flush(min(40)), { sent: 0, failed: 1, pending: 1 });
    assert.is(plain.mails.length, 0);

    const untrusted = new Mailer(config(smtp.port, { starttls: 'required', auth }), r.store);
    assert.equal(await untrusted.flush(min(50)), { sent: 0, failed: 1, pending: 1 }, 'self-signed cert not in ca: refused');

    const [a, b] = await Promise.all([r.mailer.flush(min(100)), r.mailer.flush(min(100))]);
    assert.equal(a, { sent: 1, failed: 0, pending: 0 });
    assert.is(b, a, 'overlapping flushes share one run');
    assert.is(smtp.mails.length, 2);
    assert.is(smtp.mails[1]!.subject, `${TAG} RESOLVED: HSM not usable on vault`);
  } finally {
    await r.close();
    await smtp.stop();
    await plain.stop();
  }
});

delivery('opportunistic STARTTLS: encrypted where offered, plain where not (without AUTH)', async () => {
  const tls = await startSmtp({ starttls: true });
  const plain = await startSmtp();
  const r1 = rig(tls, { starttls: 'opportunistic', tls: { ca: tls.ca! } });
  const r2 = rig(plain, { starttls: 'opportunistic' });
  try {
    const [enc] = await r1.run([checkHsm({ reachable: false, loggedIn: false })], min(0));
    assert.ok(enc?.secure, 'upgraded where offered');
    const [clear] = await r2.run([checkHsm({ reachable: false, loggedIn: false })], min(0));
    assert.is(clear?.secure, false);
  } finally {
    await r1.close();
    await r2.close();
    await tls.stop();
    await plain.stop();
  }
});

delivery('config validation: bad addresses, header-breaking names and clear-text auth are refused', () => {
  const ok = config(25);
  assert.ok(validateMailerConfig(ok));
  const bad: Array<Partial<MailerConfig>> = [
    { from: 'pks@plant.example\r\nBcc: evil@x' },
    { from: 'PKS <pks@plant.example>' },
    { to: { warning: ['it@plant.example', 'evil@x\nBcc: y@z'], critical: [] } },
    { to: { warning: [], critical: [] } },
    { site: 'plant\r\n1' },
    { box: '' },
    { host: 'smtp host' },
    { port: 0 },
    { starttls: 'maybe' as never },
    { host: 'smtp.plant.example', auth: { user: 'u', pass: 'p' }, starttls: 'opportunistic' },
    { auth: { user: 'u\r\n', pass: 'p' } },
  ];
  for (const b of bad) assert.throws(() => validateMailerConfig({ ...ok, ...b }), /PKS_CONFIG_INVALID/, JSON.stringify(b));
  assert.ok(validateMailerConfig({ ...ok, host: 'smtp.plant.example', auth: { user: 'u', pass: 'p' }, starttls: 'required' }));
  assert.ok(validateMailerConfig({ ...ok, host: 'smtp.plant.example', auth: { user: 'u', pass: 'p' }, secure: true }));
});

delivery('renderMail: recipients by severity, digest subject', () => {
  const cfg = validateMailerConfig(config(25));
  const w = renderMail(renderless('stock-low:p1', 'warning'), cfg);
  assert.equal(w.to, WARN_TO);
  assert.is(w.subject, `${TAG} WARNING raised: stock low on p1`);
  const c = renderMail(renderless('stock-low:p1', 'critical'), cfg);
  assert.equal(c.to, CRIT_TO);
});

delivery.run();

// ------------------------------------------------------------------ helpers

function renderless(key: string, severity: 'warning' | 'critical' = 'critical') {
  const [kind, subject] = [key.slice(0, key.indexOf(':')), key.slice(key.indexOf(':') + 1)];
  const at = min(0).toISOString();
  const alert = {
    key, kind, subject, severity, message: 'msg', action: 'act', raisedAt: at, updatedAt: at, notified: severity, leftAt: {},
  } as const;
  return { id: `${at}#${key}#raised`, createdAt: at, severity, items: [{ type: 'raised' as const, severity, alert: { ...alert, leftAt: {} } }] };
}

async function startSmtpRefusing(): Promise<{ port: number; stop(): Promise<void> }> {
  const { SMTPServer } = await import('smtp-server');
  const s = new SMTPServer({
    logger: false, authOptional: true, disabledCommands: ['STARTTLS'],
    onRcptTo(_a, _s, cb) {
      const e = new Error('no such user') as Error & { responseCode: number };
      e.responseCode = 550;
      cb(e);
    },
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (s.server.address() as { port: number }).port,
    stop: () => new Promise<void>((resolve) => s.close(() => resolve())),
  };
}
