// The sentinel's config validation and its collectors without a box: sources that are not
// there become findings (HSM, services) or are skipped (uplink file, grants), never a crash.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ipcClient, startIpcServer } from '../../appliance/ipc.js';
import { silentLogger } from '../../appliance/log.js';
import { Collector } from '../../services/sentinel/collect.js';
import { mailerConfig, parseSentinelConfig } from '../../services/sentinel/config.js';
import { plantSentinelConfig } from '../../services/sentinel/plant-config.js';

const t = suite<{ dir: string }>('sentinel config and collectors');
t.before((ctx) => {
  ctx.dir = mkdtempSync(path.join(tmpdir(), 'pks-sentinel-'));
});
t.after((ctx) => rmSync(ctx.dir, { recursive: true, force: true }));

const base = (dir: string, extra: Record<string, unknown> = {}) => ({
  site: 'plant-1',
  boxId: 'box-1',
  dataDir: path.join(dir, 'data'),
  mail: { host: '127.0.0.1', port: 2525, from: 'pks@plant.example', to: { warning: ['it@plant.example'] } },
  ...extra,
});
const code = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    return `${(e as { code: string }).code} ${(e as { detail: string }).detail}`;
  }
  return 'no error';
};

t('defaults: every group every minute, the four services, thresholds of the issue', ({ dir }) => {
  const c = parseSentinelConfig(base(dir));
  assert.is(c.schedules.stock, '* * * * *');
  assert.is(c.schedules.mail, '* * * * *');
  assert.equal([...c.services], ['vault', 'keystore', 'tester-api', 'uplink']);
  assert.equal({ ...c.thresholds.certificates }, { warningDays: 30, criticalDays: 7 });
  assert.is(c.mail.starttls, 'required');
  assert.ok(Object.isFrozen(c.mail));
});

t('refuses bad cron expressions, loose thresholds, unknown keys and bad mail settings', ({ dir }) => {
  assert.match(code(() => parseSentinelConfig(base(dir, { schedules: { stock: '61 * * * *' } }))), /PKS_CONFIG_INVALID schedules\.stock/);
  assert.match(code(() => parseSentinelConfig(base(dir, { thresholds: { certificates: { warningDays: 5, criticalDays: 9 } } }))), /criticalDays > warningDays/);
  assert.match(code(() => parseSentinelConfig(base(dir, { bogus: 1 }))), /unknown key 'bogus'/);
  assert.match(code(() => parseSentinelConfig(base(dir, { certificates: [{ name: 'a', path: '/x' }, { name: 'a', path: '/y' }] }))), /duplicate name/);
  const bad = parseSentinelConfig(base(dir, { mail: { host: '127.0.0.1', port: 25, from: 'x@y.example\r\nBcc: a@b.example', to: { warning: ['it@plant.example'] } } }));
  assert.match(code(() => mailerConfig(bad)), /PKS_CONFIG_INVALID mail\.from/);
});

t('the SMTP password comes from the smtp-pass credential, never the config', ({ dir }) => {
  const cred = path.join(dir, 'creds');
  rmSync(cred, { recursive: true, force: true });
  writeFileSync(path.join(dir, 'pass'), 's3cret\n');
  const c = parseSentinelConfig(base(dir, { mail: { host: 'smtp.plant.example', port: 587, user: 'pks', passwordFile: path.join(dir, 'pass'), from: 'pks@plant.example', to: { critical: ['it@plant.example'] } } }));
  assert.equal(mailerConfig(c).auth, { user: 'pks', pass: 's3cret' });
  const prev = process.env.CREDENTIALS_DIRECTORY;
  process.env.CREDENTIALS_DIRECTORY = path.join(dir, 'none');
  try {
    assert.match(code(() => mailerConfig(c)), /PKS_CREDENTIAL_MISSING/);
  } finally {
    if (prev === undefined) delete process.env.CREDENTIALS_DIRECTORY;
    else process.env.CREDENTIALS_DIRECTORY = prev;
  }
});

t('the plant config validates', ({ dir }) => {
  const c = plantSentinelConfig({ dir, boxId: 'box-1', smtpPort: 2525 });
  assert.is(c.schedules.health, '*/2 * * * * *');
  assert.equal(c.services, ['vault', 'keystore']);
});

t('collectors with nothing running: HSM and services critical, optional sources skipped', async ({ dir }) => {
  const run = path.join(dir, 'run');
  const status = path.join(dir, 'uplink.json');
  const cfg = parseSentinelConfig(
    base(dir, {
      services: ['vault', 'keystore', 'uplink'],
      uplink: { statusFile: status, maxSyncAgeMinutes: 30 },
      certificates: [{ name: 'tls-server', path: path.join(dir, 'missing.crt') }],
      grants: { keystore: true },
      storage: { disks: [dir] },
      thresholds: { storage: { diskWarningBytes: 0, diskCriticalBytes: 0 } },
    }),
  );
  const vault = ipcClient(path.join(run, 'vault', 'sentinel.sock'), { timeoutMs: 500 });
  const keystore = ipcClient(path.join(run, 'keystore', 'sentinel.sock'), { timeoutMs: 500 });
  const col = new Collector(cfg, { vault, keystore, runDir: run, timeoutMs: 500 });
  const now = new Date();
  try {
    const h = await col.collect('health', now);
    const sev = Object.fromEntries(h.observations.map((o) => [o.key, o.severity]));
    assert.equal(sev, { 'hsm:vault': 'critical', 'service:vault': 'critical', 'service:keystore': 'critical', 'service:uplink': 'critical', 'collector:health': 'ok' });
    assert.match(h.observations.find((o) => o.key === 'service:uplink')!.message, /does not answer on its socket \(PKS_IPC_UNAVAILABLE: ENOENT\)/);
    assert.ok(h.complete.includes('service'));

    const s = await col.collect('stock', now);
    assert.equal(s.observations.map((o) => o.key), ['collector:stock']);
    assert.ok(!s.complete.includes('stock-low'), 'no stock list: nothing resolved by omission');

    const u1 = await col.collect('uplink', now);
    assert.equal(u1.skipped, ['uplink: status file absent']);
    writeFileSync(status, JSON.stringify({ lastSyncAt: new Date(now.getTime() - 45 * 60_000).toISOString() }));
    const u2 = await col.collect('uplink', now);
    assert.equal(u2.observations.map((o) => [o.key, o.severity]), [['uplink-stale:kms', 'warning'], ['collector:uplink', 'ok']]);
    writeFileSync(status, '{nope');
    const u3 = await col.collect('uplink', now);
    assert.equal(u3.observations.map((o) => [o.key, o.severity]), [['collector:uplink', 'warning']]);

    const c = await col.collect('certificates', now);
    assert.equal(c.observations.map((o) => [o.key, o.severity]), [['cert-expiry:tls-server', 'critical'], ['collector:certificates', 'ok']]);
    assert.match(c.observations[0]!.message, /cannot be read \(ENOENT\)/);
    assert.equal(c.skipped, ['grants: keystore (PKS_IPC_UNAVAILABLE)']);

    const st = await col.collect('storage', now);
    assert.equal(st.observations.map((o) => [o.key, o.severity]), [[`storage:disk:${dir}`, 'ok'], ['collector:storage', 'ok']]);
    assert.equal((await col.collect('auth', now)).skipped, ['auth: not configured']);
  } finally {
    await vault.close();
    await keystore.close();
  }
});

t('measured boot: a TPM that cannot be read is a critical alert; off unless enabled', async ({ dir }) => {
  const run = path.join(dir, 'run-attest');
  const vault = ipcClient(path.join(run, 'vault', 'sentinel.sock'), { timeoutMs: 300 });
  const keystore = ipcClient(path.join(run, 'keystore', 'sentinel.sock'), { timeoutMs: 300 });
  try {
    const off = new Collector(parseSentinelConfig(base(dir, { services: [] })), { vault, keystore, runDir: run, timeoutMs: 300 });
    assert.ok((await off.collect('health', new Date())).skipped.includes('attest: not enabled'));
    // a swtpm socket nobody listens on: tpm2-tools fail, and so does the check
    const on = new Collector(parseSentinelConfig(base(dir, { services: [], attest: { enabled: true, tcti: 'swtpm:host=127.0.0.1,port=9', measurementsPath: path.join(dir, 'none.json'), expectedPath: path.join(dir, 'none-expected.json') } })), { vault, keystore, runDir: run, timeoutMs: 300 });
    const h = await on.collect('health', new Date());
    const tpm = h.observations.find((o) => o.key === 'tpm:measured-boot');
    assert.ok(tpm, JSON.stringify(h.observations));
    assert.is(tpm!.severity, 'critical');
  } finally {
    await vault.close();
    await keystore.close();
  }
});

t("the uplink's last sync from its status socket, as the image configures it (issue 9, item 12)", async ({ dir }) => {
  const run = path.join(dir, 'run-socket');
  const cfg = parseSentinelConfig(base(dir, { uplink: { service: true, maxSyncAgeMinutes: 30 } }));
  const vault = ipcClient(path.join(run, 'vault', 'sentinel.sock'), { timeoutMs: 500 });
  const keystore = ipcClient(path.join(run, 'keystore', 'sentinel.sock'), { timeoutMs: 500 });
  const uplink = ipcClient(path.join(run, 'uplink', 'sentinel.sock'), { timeoutMs: 500 });
  const col = new Collector(cfg, { vault, keystore, uplink, runDir: run, timeoutMs: 500 });
  const now = new Date();
  try {
    assert.equal((await col.collect('uplink', now)).skipped, ['uplink: not reachable']);
    const srv = await startIpcServer({
      service: 'uplink',
      dir: path.join(run, 'uplink'),
      verbs: { status: { request: { type: 'object' }, handler: () => ({ lastSyncAt: new Date(now.getTime() - 45 * 60_000).toISOString() }) } },
      callers: { sentinel: ['status'] },
      log: silentLogger,
    });
    try {
      const u = await col.collect('uplink', now);
      assert.equal(u.observations.map((o) => [o.key, o.severity]), [['uplink-stale:kms', 'warning'], ['collector:uplink', 'ok']]);
    } finally {
      await srv.close();
    }
    assert.throws(() => parseSentinelConfig(base(dir, { uplink: { maxSyncAgeMinutes: 30 } })), /service: true or a statusFile/);
  } finally {
    await Promise.all([vault.close(), keystore.close(), uplink.close()]);
  }
});

t.run();
