// The sentinel end to end: a real box (vault on SoftHSM + keystore on LMDB), a real SMTP
// server and the sentinel as its own process on 1-second schedules. Stock below minimum
// mails once, a refill mails the resolution once, a stopped vault raises the HSM alert, every
// alert event lands in the keystore's uplink outbox, and `pksctl alerts` lists them.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { promisify } from 'node:util';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { IpcClient } from '../../appliance/ipc.js';
import { randomSheKeys, type SheKeySet } from '../../scripts/plant/batch.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { issue, makeCa } from '../../scripts/plant/pki.js';
import { ROOT, startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';
import { writePlantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { startSmtp, type ReceivedMail, type TestSmtp } from '../helpers/smtp.js';

const run = promisify(execFile);
const POOL = 'oem1.ecuS.4';
const master = randomBytes(16);
const set = (prefix: string, n: number): SheKeySet => ({ pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys(prefix, n) });

interface Ctx {
  box: Box;
  smtp: TestSmtp;
  sentinel: Proc;
  uplink: IpcClient;
}

const t = suite<Ctx>('sentinel e2e');

t.before(async (ctx) => {
  ctx.smtp = await startSmtp();
  ctx.box = await startBox({ pools: [{ pool: POOL, minimum: 10, reorder: 20 }] });
  // 5 keys: below the minimum (10), above the critical level (10 / 4)
  await ctx.box.importChunks(ctx.box.batch('sent-b1', set('s1', 5)));
  const pki = path.join(ctx.box.base, 'box-pki');
  await makeCa(pki, 'tester-ca');
  const tls = await issue(pki, 'tester-ca', 'tls-server', { cn: 'pks.local', server: true, days: 20 });
  const config = await writePlantSentinelConfig({
    dir: path.join(ctx.box.base, 'sentinel'),
    boxId: ctx.box.boxId,
    smtpPort: ctx.smtp.port,
    keystoreDataDir: ctx.box.keystore.dataDir,
    everySeconds: 1,
    certificates: [
      { name: 'kms-ca', path: ctx.box.kms.caCert },
      { name: 'tls-server', path: tls.cert },
    ],
  });
  ctx.sentinel = startService('sentinel', { PKS_CONFIG: config, PKS_RUN_DIR: ctx.box.runDir }, ctx.box.logDir);
  ctx.uplink = ctx.box.keystore.client('uplink');
});

t.after(async (ctx) => {
  await ctx.sentinel?.stop();
  await ctx.box?.stop();
  await ctx.smtp?.stop();
});

const mailsAbout = (smtp: TestSmtp, re: RegExp): ReceivedMail[] => smtp.mails.filter((m) => re.test(m.subject));
const waitMail = (smtp: TestSmtp, re: RegExp, n = 1): Promise<ReceivedMail[]> =>
  waitFor(`mail ${re}`, async () => {
    const l = mailsAbout(smtp, re);
    return l.length >= n ? l : undefined;
  }, 30_000, 100);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const alertsInOutbox = async (c: IpcClient): Promise<OutboxItem[]> =>
  (await c.call<{ items: OutboxItem[] }>('outbox-peek', { limit: 5000 })).items.filter((i) => i.kind === 'alert' && typeof i.body.key === 'string');

t('stock below minimum: exactly one low-stock mail, and the expiring certificate one', async ({ smtp }) => {
  const [low] = await waitMail(smtp, /stock low/);
  assert.match(low!.subject, new RegExp(`^\\[PKS plant-demo/box-test-1\\] WARNING raised: stock low on ${POOL.replace(/\./g, '\\.')}$`));
  assert.match(low!.text, /5 keys available \(minimum 10, critical 2\)/);
  assert.match(low!.text, /Where:\s+site plant-demo, box box-test-1/);
  assert.equal(low!.to, ['plant-it@plant.example']);
  const [cert] = await waitMail(smtp, /certificate expiring on tls-server/);
  assert.match(cert!.subject, /WARNING raised/);
  // a few more runs change nothing
  await sleep(2500);
  assert.is(mailsAbout(smtp, /stock low/).length, 1);
  assert.is(smtp.mails.length, 2, smtp.mails.map((m) => m.subject).join('\n'));
});

t('a refill resolves the alert with exactly one mail', async ({ box, smtp }) => {
  await box.importChunks(box.batch('sent-b2', set('s2', 10)));
  const [, resolved] = await waitMail(smtp, /stock low/, 2);
  assert.match(resolved!.subject, /RESOLVED: stock low on oem1\.ecuS\.4/);
  assert.match(resolved!.text, /15 keys available/);
  await sleep(2000);
  assert.is(mailsAbout(smtp, /stock low/).length, 2);
});

t('alert events land in the uplink outbox of the keystore', async ({ uplink }) => {
  const items = await waitFor('outbox alerts', async () => {
    const l = await alertsInOutbox(uplink);
    return l.filter((i) => i.body.key === `stock-low:${POOL}`).length >= 2 ? l : undefined;
  }, 10_000);
  const stock = items.filter((i) => i.body.key === `stock-low:${POOL}`).map((i) => [i.body.type, i.body.severity]);
  assert.equal(stock, [['raised', 'warning'], ['resolved', 'ok']]);
  const first = items.find((i) => i.body.key === `stock-low:${POOL}`)!;
  assert.is(first.body.site, 'plant-demo');
  assert.is(first.body.box, 'box-test-1');
  assert.ok(items.some((i) => i.body.key === 'cert-expiry:tls-server' && i.body.type === 'raised'));
});

t('vault stopped: the HSM alert and the service alert are mailed as critical', async ({ box, smtp, uplink }) => {
  await box.vault.stop();
  const [hsm] = await waitMail(smtp, /HSM not usable on vault/);
  assert.match(hsm!.subject, /CRITICAL raised/);
  assert.match(hsm!.text, /the vault does not answer/);
  assert.is(hsm!.headers.get('x-pks-severity'), 'critical');
  const [svc] = await waitMail(smtp, /service unhealthy on vault/);
  assert.match(svc!.text, /does not answer on its socket \(PKS_IPC_UNAVAILABLE/);
  await waitFor('hsm alert in outbox', async () => (await alertsInOutbox(uplink)).some((i) => i.body.key === 'hsm:vault' && i.body.severity === 'critical'), 10_000);
  await sleep(1500);
  assert.is(mailsAbout(smtp, /HSM not usable/).length, 1);
});

t('pksctl alerts lists open and past alerts', async ({ box }) => {
  const env = { ...process.env, PKS_RUN_DIR: box.runDir, PKS_FROM_SOURCE: '1', NO_COLOR: '1' };
  const pksctl = path.join(ROOT, 'bin', 'pksctl.mjs');
  const open = JSON.parse((await run(process.execPath, [pksctl, 'alerts', '--json'], { env, cwd: ROOT })).stdout) as { open: Array<{ key: string; severity: string }>; history?: unknown };
  const keys = open.open.map((a) => `${a.key}=${a.severity}`).sort();
  assert.equal(keys, ['cert-expiry:tls-server=warning', 'hsm:vault=critical', 'service:vault=critical']);
  assert.is(open.open[0]!.severity, 'critical', 'critical first');
  assert.is(open.history, undefined);

  const all = JSON.parse((await run(process.execPath, [pksctl, 'alerts', '--all', '--json'], { env, cwd: ROOT })).stdout) as { history: Array<{ type: string; alert: { key: string } }> };
  const stock = all.history.filter((e) => e.alert.key === `stock-low:${POOL}`).map((e) => e.type);
  assert.equal(stock, ['resolved', 'raised'], 'newest first');

  const text = (await run(process.execPath, [pksctl, 'alerts', '--all'], { env, cwd: ROOT })).stdout;
  assert.match(text, /open alerts \(3\):/);
  assert.match(text, /CRITICAL +hsm:vault/);
  assert.match(text, /resolved +warning +stock-low:oem1\.ecuS\.4/);

  const check = JSON.parse((await run(process.execPath, [pksctl, 'alerts', 'check', '--json'], { env, cwd: ROOT })).stdout) as { groups: string[]; open: number; errors: string[] };
  assert.is(check.groups.length, 6);
  assert.is(check.open, 3);
  assert.equal(check.errors, []);

  const bad = await run(process.execPath, [pksctl, 'alerts', '--bogus'], { env, cwd: ROOT }).then(() => 0, (e: { code: number; stderr: string }) => {
    assert.match(e.stderr, /PKS_BAD_REQUEST/);
    return e.code;
  });
  assert.is(bad, 2);
});

t.run();
