// Plant fault (issue 17.4): the KMS offline for 72 hours of simulated time. The campaign stack
// (mosquitto with TLS, the reference KMS, vault on SoftHSM, keystore on LMDB, uplink, tester API
// over mTLS, each its own process) runs with its wall clock warped (test/faults/warp-clock.mjs
// preloaded into every service and the KMS: Date moves ahead by what the test writes into one
// file), and the sentinel runs in-process on the same warped clock against a real SMTP server.
// The KMS process stops; the clock moves 72 h in 3 h steps; at each step the line injects ECUs
// over mTLS and the sentinel runs every check. What must hold: production goes on from stock
// (every ECU confirmed), the outbox grows, the sentinel mails each alert once (the KMS link stale,
// the low stock; the stale link, critical after a while, is reminded at the reminder interval),
// not once per check; when the KMS is back everything syncs by itself (the
// outbox drains, the re-order is answered, the alerts resolve with one mail each), and nothing
// is lost: every injection's verification record ends at the KMS, the audit verifies.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';
import { createLogger } from '../../appliance/log.js';
import { waitFor } from '../../scripts/plant/process.js';
import { parseSentinelConfig } from '../../services/sentinel/config.js';
import { plantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { startSentinel, type Sentinel } from '../../services/sentinel/sentinel.js';
import { checkStores, injectEcu, newTally, sleep } from '../campaign/line.js';
import { startCampaignStack, type CampaignStack } from '../campaign/stack.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp.js';

const HOURS = Number(process.env.PKS_FAULT_KMS_HOURS ?? 72);
const STEP_H = 3;
/** the plant may mail open criticals again less often than the default 4 h; still several times in 72 h */
const REMINDER_MIN = 720;
const H = 3_600_000;
const warpModule = path.join(path.dirname(fileURLToPath(import.meta.url)), 'warp-clock.mjs');

let base = '';
let warpDir = '';
let stack: CampaignStack | undefined;
let smtp: TestSmtp | undefined;
let sentinel: Sentinel | undefined;
const saved = { warp: process.env.PKS_WARP_FILE, args: process.env.PKS_NODE_ARGS };

test.after(async () => {
  await sentinel?.stop().catch(() => {});
  await stack?.stop();
  await smtp?.stop();
  for (const [k, v] of [['PKS_WARP_FILE', saved.warp], ['PKS_NODE_ARGS', saved.args]] as const) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  if (!process.env.PKS_KEEP_TMP) for (const d of [base, warpDir]) if (d) await rm(d, { recursive: true, force: true });
});

test(`the KMS offline for ${HOURS} h of warped time: production from stock, the outbox grows, one mail per alert, everything syncs afterwards, nothing lost`, async () => {
  // the warp file, readable by the service users (vault and keystore run under their own)
  warpDir = await mkdtemp(path.join(os.tmpdir(), 'pks-warp-'));
  await chmod(warpDir, 0o755);
  const warpFile = path.join(warpDir, 'offset-ms');
  let offset = 0;
  const warp = async (ms: number): Promise<void> => {
    offset = ms;
    await writeFile(warpFile, String(ms), { mode: 0o644 });
    await sleep(200); // every process re-reads it within 50 ms
  };
  await warp(0);
  process.env.PKS_WARP_FILE = warpFile;
  process.env.PKS_NODE_ARGS = `${saved.args ?? ''} --import ${warpModule}`.trim();

  base = await mkdtemp(path.join(os.tmpdir(), 'pks-fault-kms72-'));
  smtp = await startSmtp();
  // 340 keys per pool from the KMS, minimum 300: a few dozen ECUs take a pool below it
  stack = await startCampaignStack({ base, testers: 2, minimum: 300, reorder: 340 });
  const s = stack;
  const raw = plantSentinelConfig({
    dir: path.join(base, 'sentinel'),
    boxId: s.boxId,
    smtpPort: smtp.port,
    keystoreDataDir: s.box.keystore.dataDir,
    uplinkStatusFile: path.join(s.box.runDir, 'uplink', 'status.json'),
    to: ['it@plant.example'],
  });
  const cfg = parseSentinelConfig({ ...raw, engine: { reminderMinutes: REMINDER_MIN, flapMinutes: 15, maxMailsPerRun: 10 } });
  const log = createLogger('sentinel', { level: 'error', write: () => {} });
  sentinel = await startSentinel(cfg, { log, runDir: s.box.runDir, manual: true, runAtStart: false, now: () => new Date(Date.now() + offset), mailBackoffMs: 60_000 });

  const tally = newTally();
  const testers = s.api.testers.map((t) => s.api.client(t));
  const produce = async (perTester: number): Promise<void> => {
    await Promise.all(testers.map(async (c, w) => {
      for (let i = 0; i < perTester; i++) assert.ok(await injectEcu(c, s.pools[(w + i) % s.pools.length]!, tally, 30_000), 'an ECU got its key');
    }));
  };
  const ks = s.box.keystore.client('uplink');
  const outboxSize = async (): Promise<number> => (await ks.call<{ items: unknown[] }>('outbox-peek', { limit: 5000 })).items.length;
  const verifiedAtKms = async (): Promise<number> => (await s.kms.fleet.call<{ counters: { verified: number } }>('box', { boxId: s.boxId })).counters.verified;

  // the plant as usual: a few ECUs, synced, nothing to say
  await produce(3);
  await waitFor('synced before the outage', async () => (await verifiedAtKms()) >= tally.confirmed.size && (await outboxSize()) === 0, 30_000, 200);
  await sleep(5500); // the uplink's status file (every 5 s) has the last sync
  await sentinel.runNow();
  assert.equal(smtp.mails.map((m) => m.subject), [], 'no alert while the KMS is there');

  // the KMS goes offline; 72 h pass in 3 h steps, the line keeps injecting
  await s.kms.stop();
  const confirmedBefore = tally.confirmed.size;
  let outbox = await outboxSize();
  const outboxAt = [outbox];
  for (let h = STEP_H; h <= HOURS; h += STEP_H) {
    await warp(h * H);
    await produce(3);
    await sleep(400); // an uplink tick: re-orders asked, the outbox offered, no answer
    await sentinel.runNow();
    const n = await outboxSize();
    assert.ok(n >= outbox, `the outbox only grows while the KMS is away (${outbox} -> ${n})`);
    outbox = n;
    outboxAt.push(n);
  }
  const made = tally.confirmed.size - confirmedBefore;
  assert.is(made, (HOURS / STEP_H) * 6, 'production went on from stock: every ECU confirmed');
  assert.ok(outbox >= made, `the outbox holds every injection since the KMS left: ${outbox} items for ${made} injections`);
  const pools = (await s.box.keystore.client('pksctl').call<StatsResponse>('stats')).pools;
  assert.ok(Object.values(pools).some((p) => p.available < p.minimum), `a pool below its minimum: ${JSON.stringify(pools)}`);
  const duringOutage = smtp.mails.map((m) => m.subject);
  const seen = `mails during the outage: ${duringOutage.join(' | ')}`;
  // per alert: what each mail was (raised, escalated, reminder), by the subject's fixed words
  const byAlert = new Map<string, string[]>();
  for (const subj of duringOutage) {
    const m = /\] (?:WARNING|CRITICAL) (raised|escalated|still open): (.+)$/.exec(subj);
    assert.ok(m, `an expected kind of mail: ${subj}`);
    byAlert.set(m![2]!, [...(byAlert.get(m![2]!) ?? []), m![1]!]);
  }
  assert.ok([...byAlert.keys()].some((k) => /^KMS link stale/.test(k)), seen);
  assert.ok([...byAlert.keys()].some((k) => /^stock low/.test(k)), seen);
  const reminderLimit = Math.ceil((HOURS * 60) / REMINDER_MIN);
  for (const [alert, kinds] of byAlert) {
    // each change mailed once; an open critical reminded at its interval, never once per check
    assert.is(kinds.filter((k) => k === 'raised').length, 1, `${alert} raised once: ${kinds.join(', ')}`);
    assert.ok(kinds.filter((k) => k === 'escalated').length <= 1, `${alert} escalated at most once: ${kinds.join(', ')}`);
    assert.ok(kinds.filter((k) => k === 'still open').length <= reminderLimit, `${alert}: reminders at most every ${REMINDER_MIN} min: ${kinds.join(', ')}`);
  }
  assert.ok(duringOutage.length < HOURS / STEP_H, `${duringOutage.length} mails in ${HOURS / STEP_H} checks: ${seen}`);

  // the KMS is back: everything syncs by itself
  await s.kms.restart();
  await waitFor('the KMS verified every injection', async () => (await verifiedAtKms()) >= tally.confirmed.size, 60_000, 250);
  await waitFor('the outbox drained', async () => (await outboxSize()) === 0, 60_000, 250);
  await waitFor('the re-order answered', async () => Object.values((await s.box.keystore.client('pksctl').call<StatsResponse>('stats')).pools).every((p) => p.available >= p.minimum), 60_000, 250);
  await sleep(5500); // the status file (every 5 s) has the new sync
  await sentinel.runNow();
  assert.equal(sentinel.alerts('open', 100).open.map((a) => a.key), [], 'every alert resolved');
  const resolved = smtp.mails.slice(duringOutage.length).map((m) => m.subject);
  assert.is(resolved.length, byAlert.size, `one resolution per alert: ${resolved.join(' | ')}`);
  assert.ok(resolved.every((x) => /RESOLVED/.test(x)), resolved.join(' | '));

  await sentinel.stop();
  sentinel = undefined;
  const c = await checkStores(s, tally);
  assert.equal(tally.problems, []);
  assert.is(tally.duplicates, 0);
  assert.is(c.lost, 0);
  assert.ok(c.audit_ok, 'the audit verifies');
  assert.is(c.injected, tally.confirmed.size);
  assert.is(c.kms_missing, 0, 'every verification record at the KMS');
  console.log(`  KMS offline ${HOURS} h (warped): ${made} ECUs from stock, outbox ${outboxAt[0]} -> ${outbox} items, mails ${duringOutage.length} during the outage, ${resolved.length} resolutions after`);
});

test.run();
