import { webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import { open } from 'lmdb';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isPksError } from '../../appliance/errors.js';
import {
  checkAuthFailures, checkCertificates, checkGrants, checkHsm, checkServices, checkStock, checkStorage, checkUplink,
} from '../../services/sentinel/checks.js';
import { diskUsage, lmdbUsage } from '../../services/sentinel/probes.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);
const DAY = 86_400_000;
const NOW = new Date('2030-03-01T12:00:00Z');
const at = (deltaMs: number): Date => new Date(NOW.getTime() + deltaMs);

let keys: webcrypto.CryptoKeyPair;
async function cert(notAfter: Date, notBefore = new Date('2029-01-01T00:00:00Z')): Promise<string> {
  keys ??= (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01', name: 'CN=test', notBefore, notAfter, keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
  });
  return c.toString('pem');
}

const throwsCoded = (fn: () => unknown, code = 'PKS_BAD_REQUEST'): void => {
  try {
    fn();
  } catch (e) {
    assert.ok(isPksError(e), 'coded error');
    assert.is((e as { code: string }).code, code);
    return;
  }
  assert.unreachable('should have thrown');
};

test('certificates: ok, warning at 30 days, critical at 7, expired, unparseable, not yet valid', async () => {
  const obs = checkCertificates(
    [
      { name: 'tls-server', pem: await cert(at(90 * DAY)) },
      { name: 'tester-ca', pem: await cert(at(20 * DAY)) },
      { name: 'kms-client', pem: await cert(at(3 * DAY)) },
      { name: 'old', pem: await cert(at(-DAY)) },
      { name: 'junk', pem: '-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----' },
      { name: 'future', pem: await cert(at(400 * DAY), at(DAY)) },
    ],
    NOW,
  );
  assert.equal(obs.map((o) => [o.key, o.severity]), [
    ['cert-expiry:tls-server', 'ok'],
    ['cert-expiry:tester-ca', 'warning'],
    ['cert-expiry:kms-client', 'critical'],
    ['cert-expiry:old', 'critical'],
    ['cert-expiry:junk', 'critical'],
    ['cert-expiry:future', 'warning'],
  ]);
  assert.match(obs[1]!.message, /in 20 days/);
  assert.match(obs[3]!.message, /expired/);
  assert.ok(obs[2]!.action.length > 0);
  // configurable thresholds
  const tight = checkCertificates([{ name: 'tester-ca', pem: await cert(at(20 * DAY)) }], NOW, { warningDays: 10, criticalDays: 5 });
  assert.is(tight[0]!.severity, 'ok');
  throwsCoded(() => checkCertificates([{ name: 'x', pem: '' }], NOW, { warningDays: 5, criticalDays: 10 }));
  throwsCoded(() => checkCertificates([{ name: '', pem: '' }], NOW));
});

test('grants: expiry levels, bad dates refused', () => {
  const obs = checkGrants(
    [
      { tester: 'eol-1', expiresAt: at(60 * DAY) },
      { tester: 'eol-2', expiresAt: at(10 * DAY).toISOString() },
      { tester: 'eol-3', expiresAt: at(DAY) },
      { tester: 'eol-4', expiresAt: at(-1) },
    ],
    NOW,
  );
  assert.equal(obs.map((o) => o.severity), ['ok', 'warning', 'critical', 'critical']);
  assert.is(obs[1]!.key, 'grant-expiry:eol-2');
  throwsCoded(() => checkGrants([{ tester: 'eol', expiresAt: 'tomorrow' }], NOW));
});

test('stock: minimum and critical thresholds, days of stock left', () => {
  const obs = checkStock([
    { pool: 'oem1.ecuA.1', available: 5000, minimum: 1000, critical: 200, burnRatePerDay: 500 },
    { pool: 'oem1.ecuA.2', available: 999, minimum: 1000, critical: 200, burnRatePerDay: 500 },
    { pool: 'oem1.ecuA.4', available: 150, minimum: 1000, critical: 200, burnRatePerDay: 500 },
    { pool: 'oem1.ecuB.1', available: 10, minimum: 100, critical: 50, burnRatePerDay: 0 },
  ]);
  assert.equal(obs.map((o) => o.severity), ['ok', 'warning', 'critical', 'critical']);
  assert.is(obs[2]!.key, 'stock-low:oem1.ecuA.4');
  assert.match(obs[1]!.message, /about 2\.0 days/);
  assert.match(obs[2]!.message, /150 keys available/);
  assert.match(obs[3]!.message, /no consumption/);
  throwsCoded(() => checkStock([{ pool: 'p', available: -1, minimum: 1, critical: 0, burnRatePerDay: 0 }]));
  throwsCoded(() => checkStock([{ pool: 'p', available: 1, minimum: 1, critical: 5, burnRatePerDay: 0 }]));
});

test('storage: map percent and free disk bytes, probes read real numbers', async () => {
  const GiB = 1024 ** 3;
  const obs = checkStorage({
    maps: [
      { name: 'keystore', mapSize: 100, usedBytes: 50 },
      { name: 'audit', mapSize: 100, usedBytes: 85 },
      { name: 'outbox', mapSize: 100, usedBytes: 95 },
    ],
    disks: [
      { path: '/var/lib/pks', freeBytes: 10 * GiB, totalBytes: 20 * GiB },
      { path: '/data', freeBytes: GiB, totalBytes: 20 * GiB },
      { path: '/log', freeBytes: 100 * 1024 ** 2, totalBytes: 20 * GiB },
    ],
  });
  assert.equal(obs.map((o) => [o.key, o.severity]), [
    ['storage:map:keystore', 'ok'],
    ['storage:map:audit', 'warning'],
    ['storage:map:outbox', 'critical'],
    ['storage:disk:/var/lib/pks', 'ok'],
    ['storage:disk:/data', 'warning'],
    ['storage:disk:/log', 'critical'],
  ]);
  assert.match(obs[1]!.message, /85\.0% full/);

  const dir = mkdtempSync(path.join(tmpdir(), 'pks-probe-'));
  try {
    const db = open({ path: path.join(dir, 'db') });
    await db.put('a', 'b');
    const m = lmdbUsage('keystore', db);
    assert.ok(m.mapSize > 0 && m.usedBytes > 0 && m.usedBytes <= m.mapSize);
    await db.close();
    const d = await diskUsage(dir);
    assert.ok(d.totalBytes > 0 && d.freeBytes >= 0 && d.freeBytes <= d.totalBytes);
    assert.is(checkStorage({ maps: [m], disks: [] })[0]!.severity, 'ok');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hsm: unreachable and logged out are critical', () => {
  assert.is(checkHsm({ reachable: true, loggedIn: true }).severity, 'ok');
  assert.is(checkHsm({ reachable: false, loggedIn: false }).severity, 'critical');
  const o = checkHsm({ reachable: true, loggedIn: false });
  assert.is(o.severity, 'critical');
  assert.is(o.key, 'hsm:vault');
  throwsCoded(() => checkHsm({ reachable: 'yes' } as never));
});

test('uplink: age against allowed, critical at 4x by default, never synced warns', () => {
  assert.is(checkUplink({ lastSyncAt: at(-10 * 60_000), maxAgeMinutes: 60 }, NOW).severity, 'ok');
  assert.is(checkUplink({ lastSyncAt: at(-90 * 60_000), maxAgeMinutes: 60 }, NOW).severity, 'warning');
  assert.is(checkUplink({ lastSyncAt: at(-300 * 60_000), maxAgeMinutes: 60 }, NOW).severity, 'critical');
  assert.is(checkUplink({ lastSyncAt: null, maxAgeMinutes: 60 }, NOW).severity, 'warning');
  assert.is(checkUplink({ lastSyncAt: at(-90 * 60_000), maxAgeMinutes: 60 }, NOW).key, 'uplink-stale:kms');
  throwsCoded(() => checkUplink({ lastSyncAt: 'never', maxAgeMinutes: 60 }, NOW));
});

test('auth failures: counted in the window only, sources named', () => {
  const f = (n: number, ageMs: number, source: string) => Array.from({ length: n }, () => ({ at: at(-ageMs), source }));
  const calm = checkAuthFailures([...f(5, 60_000, 'eol-7'), ...f(100, 3_600_000, 'old')], NOW, { windowMinutes: 10, threshold: 20 });
  assert.is(calm.severity, 'ok');
  const burst = checkAuthFailures([...f(25, 60_000, '10.0.0.9'), ...f(3, 60_000, 'eol-7\r\nBcc: x')], NOW, { windowMinutes: 10, threshold: 20 });
  assert.is(burst.severity, 'warning');
  assert.match(burst.message, /28 failed authentications/);
  assert.match(burst.message, /10\.0\.0\.9 \(25\)/);
  assert.not.match(burst.message, /[\r\n]/);
  assert.is(checkAuthFailures(f(101, 1000, 'x'), NOW, { threshold: 20 }).severity, 'critical');
  throwsCoded(() => checkAuthFailures([{ at: 'soon' }], NOW));
  // the tester API names address and certificate (issue 9, item 10)
  const named = checkAuthFailures(Array.from({ length: 30 }, () => ({ at: at(-1000), source: '10.1.2.3', cn: 'eol-tester-04' })), NOW, { threshold: 20 });
  assert.match(named.message, /mostly from 10\.1\.2\.3 CN=eol-tester-04 \(30\)/);
});

test('services: unhealthy critical, stale warning, dead critical', () => {
  const obs = checkServices(
    [
      { name: 'vault', healthy: true, lastSeen: at(-10_000) },
      { name: 'uplink', healthy: false },
      { name: 'tester-api', healthy: true, lastSeen: at(-300_000) },
      { name: 'attest', healthy: true, lastSeen: at(-3_600_000) },
    ],
    NOW,
  );
  assert.equal(obs.map((o) => [o.key, o.severity]), [
    ['service:vault', 'ok'],
    ['service:uplink', 'critical'],
    ['service:tester-api', 'warning'],
    ['service:attest', 'critical'],
  ]);
  assert.match(obs[1]!.action, /pks-uplink/);
  throwsCoded(() => checkServices([{ name: 'x' } as never], NOW));
});

test('names with control characters are flattened in keys and subjects', () => {
  const [o] = checkGrants([{ tester: 'eol\r\nBcc: evil@x', expiresAt: at(DAY) }], NOW);
  assert.is(o!.subject, 'eol Bcc: evil@x');
  assert.is(o!.key, 'grant-expiry:eol Bcc: evil@x');
});

test.run();
