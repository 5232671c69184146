// Plant fault (issue 17.4): SMTP down for a day. The sentinel runs in-process on a warped clock
// (its `now` seam: every check, alert decision and mail retry takes the run's time from it)
// against a real box (vault on SoftHSM, keystore on LMDB) and a real SMTP server that refuses
// connections for 24 simulated hours. Every 10 simulated minutes one full run. During the
// outage the vault stops (two critical alerts) and the stock is refilled (a resolution); the
// sentinel is restarted mid-outage on its own LMDB. What must hold: the queue survives the
// restart, it does not grow with reminders (one pending mail per alert is enough: no mail storm
// when SMTP returns), every queued mail is delivered once SMTP is back, none twice, and the
// reminders start again afterwards.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../../appliance/log.js';
import { randomSheKeys, type SheKeySet } from '../../scripts/plant/batch.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { parseSentinelConfig } from '../../services/sentinel/config.js';
import { plantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { startSentinel, type Sentinel } from '../../services/sentinel/sentinel.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp.js';

const POOL = 'oem1.ecuF.4';
const MIN = 60_000;
const master = randomBytes(16);
const set = (prefix: string, n: number): SheKeySet => ({ pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys(prefix, n) });

let box: Box | undefined;
let smtp: TestSmtp | undefined;
let sentinel: Sentinel | undefined;

test.after(async () => {
  await sentinel?.stop().catch(() => {});
  await box?.stop();
  await smtp?.stop();
});

test('SMTP down for a simulated day: alerts queue durably (restart mid-outage), no reminder storm, each mail delivered once afterwards', async () => {
  smtp = await startSmtp();
  box = await startBox({ pools: [{ pool: POOL, minimum: 10, reorder: 20 }] });
  await box.importChunks(box.batch('day-b1', set('d1', 5))); // below the minimum: stock low
  const raw = plantSentinelConfig({ dir: path.join(box.base, 'sentinel'), boxId: box.boxId, smtpPort: smtp.port, keystoreDataDir: box.keystore.dataDir, to: ['it@plant.example'] });
  // reminders every hour for open criticals, the digest cap at 3 mails per run
  const cfg = parseSentinelConfig({ ...raw, engine: { reminderMinutes: 60, flapMinutes: 15, maxMailsPerRun: 3 } });
  let t = Date.now();
  const now = (): Date => new Date(t);
  const log = createLogger('sentinel', { level: 'error', write: () => {} });
  const start = (): Promise<Sentinel> => startSentinel(cfg, { log, runDir: box!.runDir, manual: true, runAtStart: false, now, mailBackoffMs: 60_000 });
  sentinel = await start();
  const subjects = (): string[] => smtp!.mails.map((m) => m.subject);

  // SMTP up: the low stock is mailed once
  await sentinel.runNow();
  assert.equal(subjects().map((s) => s.replace(/^\[[^\]]+\] /, '')), [`WARNING raised: stock low on ${POOL}`]);

  // 24 h of SMTP outage, one run every 10 minutes
  await smtp.down();
  const outageStart = t;
  let maxPending = 0;
  const pendingNow = (): number => Number(/(\d+) mail\(s\) queued/.exec(sentinel!.status())?.[1] ?? -1);
  for (let step = 1; step <= 144; step++) {
    t = outageStart + step * 10 * MIN;
    if (step === 12) await box.vault.stop(); // 2 h in: the HSM and the vault service go critical
    if (step === 6) await box.importChunks(box.batch('day-b2', set('d2', 20))); // 1 h in, refilled: stock low resolves
    if (step === 72) {
      // 12 h in: the sentinel restarts; what it queued is on disk
      const before = pendingNow();
      await sentinel.stop();
      sentinel = undefined;
      sentinel = await start();
      assert.is(pendingNow(), before, 'a restart keeps every queued mail');
    }
    const s = await sentinel.runNow();
    maxPending = Math.max(maxPending, s.mailsPending);
  }
  assert.is(smtp.mails.length, 1, 'nothing reached the dead server');
  const queued = pendingNow();
  // the HSM + vault service raises (critical), the stock resolution: 3 mails, and no reminder
  // piled up behind them in 22 hours of open criticals
  assert.ok(queued >= 2 && queued <= 4, `queued after a day: ${queued}`);
  assert.ok(maxPending <= 4, `the queue stayed small: at most ${maxPending}`);
  const open = sentinel.alerts('open', 100).open.map((a) => `${a.key}=${a.severity}`).sort();
  assert.equal(open, ['hsm:vault=critical', 'service:vault=critical']);

  // SMTP back: the queue drains within the backoff (at most 64 min here), each mail once
  await smtp.up();
  const back = t;
  for (let step = 1; step <= 12 && pendingNow() > 0; step++) {
    t = back + step * 10 * MIN;
    await sentinel.runNow();
  }
  assert.is(pendingNow(), 0, 'every queued mail delivered');
  const after = smtp.mails.slice(1);
  assert.ok(after.length >= queued && after.length <= queued + 2, `mails when SMTP returned: ${after.length} (queued ${queued}): ${after.map((m) => m.subject).join(' | ')}`);
  const ids = smtp.mails.map((m) => m.headers.get('message-id'));
  assert.is(new Set(ids).size, ids.length, 'no mail twice');
  const text = after.map((m) => `${m.subject}\n${m.text}`).join('\n');
  assert.match(text, /CRITICAL raised: HSM not usable on vault|HSM not usable on vault/);
  assert.match(text, /service unhealthy on vault/);
  assert.match(text, /RESOLVED: stock low/);
  const raisedHsm = smtp.mails.filter((m) => /raised: HSM not usable/.test(m.subject) || (/digest/i.test(m.subject) && /HSM not usable/.test(m.text)));
  assert.is(raisedHsm.length, 1, 'the HSM raise went out once');

  // the alert is still open: reminders are due again, one per hour (not suppressed for good)
  const delivered = smtp.mails.length;
  const resumed = t;
  for (let step = 1; step <= 12; step++) {
    t = resumed + step * 10 * MIN;
    await sentinel.runNow();
  }
  const reminders = smtp.mails.slice(delivered);
  assert.ok(reminders.length >= 1 && reminders.length <= 4, `reminders in 2 h for 2 open criticals: ${reminders.map((m) => m.subject).join(' | ')}`);
  assert.ok(reminders.every((m) => /reminder|REMINDER|still/i.test(m.subject + m.text)), reminders.map((m) => m.subject).join(' | '));
});

test.run();
