// The sentinel's checks: pure functions from collected inputs (and `now`) to observations.
// Collecting the inputs (reading certificates, asking the keystore, statfs, ...) is the
// caller's job, so every rule here is testable with plain data. Each check reports every
// subject it looked at, 'ok' included: the engine resolves alerts on 'ok'.
// Structurally bad input throws PKS_BAD_REQUEST; a bad value about the monitored thing
// itself (an unparseable certificate) is a finding and becomes a critical observation.
import { X509Certificate } from '@peculiar/x509';
import { pksError } from '../../appliance/errors.js';
import type { Level, Observation } from './alerts.js';
import { safeName } from './text.js';

const DAY = 86_400_000;
const MINUTE = 60_000;

function obs(kind: string, subject: string, severity: Level, message: string, action: string, within = false): Observation {
  const s = safeName(subject);
  return { key: `${kind}:${s}`, kind, subject: s, severity, message, action, ...(within ? { within: true } : {}) };
}

/**
 * Hysteresis (alerts.ts): is `value` on the better side of the threshold `edge` by less than
 * `margin`? `high` means high values are bad (ages, counts, fill levels), `low` the opposite
 * (stock, free bytes, days left).
 */
function inBand(value: number, edge: number, margin: number, bad: 'high' | 'low'): boolean {
  return bad === 'high' ? value <= edge && value > edge - margin : value >= edge && value < edge + margin;
}
const tenth = (n: number, floor = 1): number => Math.max(floor, Math.ceil(Math.abs(n) * 0.1));


const fail = (what: string): never => {
  throw pksError('PKS_BAD_REQUEST', what);
};

function list<T>(v: unknown, what: string): T[] {
  if (!Array.isArray(v)) fail(`${what}: expected a list`);
  return v as T[];
}

function name(v: unknown, what: string): string {
  if (typeof v !== 'string' || safeName(v).length === 0) fail(`${what}: name`);
  return v as string;
}

function num(v: unknown, what: string, min = 0): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min) fail(`${what}: number`);
  return v as number;
}

function date(v: unknown, what: string): Date {
  const d = v instanceof Date ? v : typeof v === 'string' || typeof v === 'number' ? new Date(v) : undefined;
  if (!d || Number.isNaN(d.getTime())) fail(`${what}: date`);
  return d!;
}

function thresholds(warning: number, critical: number, what: string): void {
  if (!(critical <= warning)) fail(`${what}: critical must not be looser than warning`);
}

const days = (n: number): string => (n >= 10 ? `${Math.floor(n)}` : n.toFixed(1));
const bytes = (n: number): string => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${u[i]}`;
};

// ---------------------------------------------------------------- certificate expiry

export interface CertInput {
  name: string;
  pem: string;
}

export interface ExpiryThresholds {
  warningDays?: number;
  criticalDays?: number;
}

function expiry(
  kind: string, subject: string, notAfter: Date, now: Date, warnDays: number, critDays: number,
  label: string, action: string,
): Observation {
  const left = (notAfter.getTime() - now.getTime()) / DAY;
  const at = notAfter.toISOString();
  if (left <= 0) return obs(kind, subject, 'critical', `${label} expired at ${at}`, action);
  const msg = `${label} expires at ${at}, in ${days(left)} days`;
  if (left <= critDays) return obs(kind, subject, 'critical', msg, action);
  if (left <= warnDays) return obs(kind, subject, 'warning', msg, action, inBand(left, critDays, 1, 'low'));
  return obs(kind, subject, 'ok', msg, '', inBand(left, warnDays, 1, 'low'));
}

/** Certificate expiry: warning at 30 days left, critical at 7, expired or unreadable = critical. */
export function checkCertificates(certs: CertInput[], now: Date, t: ExpiryThresholds = {}): Observation[] {
  const warn = num(t.warningDays ?? 30, 'cert warningDays');
  const crit = num(t.criticalDays ?? 7, 'cert criticalDays');
  thresholds(warn, crit, 'cert thresholds');
  const action = 'Renew the certificate (pksctl cert renew) before it expires; until then the services using it stop working.';
  return list<CertInput>(certs, 'certificates').map((c, i) => {
    const n = name(c?.name, `certificates[${i}]`);
    if (typeof c.pem !== 'string') fail(`certificates[${i}]: pem`);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(c.pem);
    } catch {
      return obs('cert-expiry', n, 'critical', 'certificate cannot be parsed', 'Replace the certificate file with a valid PEM certificate.');
    }
    if (cert.notBefore.getTime() > now.getTime()) {
      return obs('cert-expiry', n, 'warning', `certificate is not valid before ${cert.notBefore.toISOString()}`, 'Check the box clock (NTP) and the certificate validity.');
    }
    return expiry('cert-expiry', n, cert.notAfter, now, warn, crit, 'certificate', action);
  });
}

// ---------------------------------------------------------------- tester grants

export interface GrantInput {
  tester: string;
  expiresAt: Date | string;
}

/** Tester authorisations running out: warning at 14 days left, critical at 2, expired = critical. */
export function checkGrants(grants: GrantInput[], now: Date, t: ExpiryThresholds = {}): Observation[] {
  const warn = num(t.warningDays ?? 14, 'grant warningDays');
  const crit = num(t.criticalDays ?? 2, 'grant criticalDays');
  thresholds(warn, crit, 'grant thresholds');
  const action = 'Extend the tester grant (pksctl tester grant) or retire the tester; an expired tester cannot fetch keys.';
  return list<GrantInput>(grants, 'grants').map((g, i) =>
    expiry('grant-expiry', name(g?.tester, `grants[${i}]`), date(g.expiresAt, `grants[${i}].expiresAt`), now, warn, crit, 'tester grant', action),
  );
}

// ---------------------------------------------------------------- key stock

export interface StockInput {
  pool: string;
  available: number;
  /** Below this: warning. */
  minimum: number;
  /** Below this: critical. */
  critical: number;
  burnRatePerDay: number;
}

/** Key stock per pool, with the days of production it still covers. */
export function checkStock(pools: StockInput[]): Observation[] {
  return list<StockInput>(pools, 'pools').map((p, i) => {
    const w = `pools[${i}]`;
    const pool = name(p?.pool, w);
    const available = num(p.available, `${w}.available`);
    const minimum = num(p.minimum, `${w}.minimum`);
    const critical = num(p.critical, `${w}.critical`);
    const rate = num(p.burnRatePerDay, `${w}.burnRatePerDay`);
    thresholds(minimum, critical, w);
    const left = rate > 0 ? `, about ${days(available / rate)} days of stock at ${days(rate)} keys/day` : ', no consumption measured';
    const msg = `${available} keys available (minimum ${minimum}, critical ${critical})${left}`;
    const action = 'Connect the box to the KMS so it can refill the pool, or order more key material for this pool.';
    if (available < critical) return obs('stock-low', pool, 'critical', msg, action);
    if (available < minimum) return obs('stock-low', pool, 'warning', msg, action, inBand(available, critical, tenth(critical), 'low'));
    return obs('stock-low', pool, 'ok', msg, '', inBand(available, minimum, tenth(minimum), 'low'));
  });
}

// ---------------------------------------------------------------- storage

export interface MapUsageInput {
  name: string;
  mapSize: number;
  usedBytes: number;
}

export interface DiskInput {
  path: string;
  freeBytes: number;
  totalBytes: number;
}

export interface StorageThresholds {
  mapWarningPercent?: number;
  mapCriticalPercent?: number;
  diskWarningBytes?: number;
  diskCriticalBytes?: number;
}

/** LMDB map fill level and free disk bytes. Subjects are `map:<name>` and `disk:<path>`. */
export function checkStorage(input: { maps: MapUsageInput[]; disks: DiskInput[] }, t: StorageThresholds = {}): Observation[] {
  if (!input || typeof input !== 'object') fail('storage input');
  const mapWarn = num(t.mapWarningPercent ?? 80, 'mapWarningPercent');
  const mapCrit = num(t.mapCriticalPercent ?? 90, 'mapCriticalPercent');
  const diskWarn = num(t.diskWarningBytes ?? 2 * 1024 ** 3, 'diskWarningBytes');
  const diskCrit = num(t.diskCriticalBytes ?? 512 * 1024 ** 2, 'diskCriticalBytes');
  if (mapCrit < mapWarn || diskCrit > diskWarn) fail('storage thresholds');
  const out: Observation[] = [];
  for (const [i, m] of list<MapUsageInput>(input.maps, 'maps').entries()) {
    const n = name(m?.name, `maps[${i}]`);
    const size = num(m.mapSize, `maps[${i}].mapSize`, 1);
    const used = num(m.usedBytes, `maps[${i}].usedBytes`);
    const pct = (100 * used) / size;
    const msg = `LMDB store ${n} is ${pct.toFixed(1)}% full (${bytes(used)} of ${bytes(size)})`;
    const action = 'Let the uplink deliver and prune acknowledged records, or grow the map size; a full store stops key issuance.';
    const level: Level = pct >= mapCrit ? 'critical' : pct >= mapWarn ? 'warning' : 'ok';
    // margin: 5 percentage points below the threshold the level is under
    out.push(obs('storage', `map:${n}`, level, msg, pct >= mapWarn ? action : '', level === 'ok' ? pct > mapWarn - 5 : level === 'warning' && pct > mapCrit - 5));
  }
  for (const [i, d] of list<DiskInput>(input.disks, 'disks').entries()) {
    const p = name(d?.path, `disks[${i}]`);
    const free = num(d.freeBytes, `disks[${i}].freeBytes`);
    const total = num(d.totalBytes, `disks[${i}].totalBytes`);
    const msg = `${bytes(free)} free of ${bytes(total)} on ${p}`;
    const action = 'Free disk space (old logs, stale update bundles) or replace the data disk; a full disk stops key issuance.';
    const level: Level = free <= diskCrit ? 'critical' : free <= diskWarn ? 'warning' : 'ok';
    const within = level === 'ok' ? inBand(free, diskWarn, tenth(diskWarn), 'low') : level === 'warning' && inBand(free, diskCrit, tenth(diskCrit), 'low');
    out.push(obs('storage', `disk:${p}`, level, msg, free <= diskWarn ? action : '', within));
  }
  return out;
}

// ---------------------------------------------------------------- HSM

export interface HsmInput {
  reachable: boolean;
  loggedIn: boolean;
}

/** The vault's HSM: unreachable or not logged in means no keys are served (fail closed). */
export function checkHsm(h: HsmInput, subject = 'vault'): Observation {
  if (!h || typeof h.reachable !== 'boolean' || typeof h.loggedIn !== 'boolean') fail('hsm input');
  if (!h.reachable) {
    return obs('hsm', subject, 'critical', 'the HSM does not answer; key issuance is stopped', 'Check the HSM (power, cable, PKCS#11 module) and the vault service log.');
  }
  if (!h.loggedIn) {
    return obs('hsm', subject, 'critical', 'the HSM session is not logged in; key issuance is stopped', 'Check the HSM PIN provisioning (TPM unseal) and restart the vault service.');
  }
  return obs('hsm', subject, 'ok', 'the HSM is reachable and logged in', '');
}

// ---------------------------------------------------------------- application gate (issue 12)

export interface GateInput {
  open: boolean;
  code?: string;
  reason?: string;
}

/**
 * The vault's application gate: closed means a file of a service or its configuration is not
 * the provisioned one (or cannot be shown to be), and the vault serves no key. Critical at once:
 * it is tampering until a person has shown otherwise. The reason is the vault's own fixed text.
 */
export function checkApplicationGate(g: GateInput, subject = 'vault'): Observation {
  if (!g || typeof g.open !== 'boolean') fail('gate input');
  if (g.open) return obs('tamper', subject, 'ok', 'the application and its configuration are as provisioned', '');
  const why = typeof g.reason === 'string' ? safeName(g.reason.slice(0, 160)) || 'no reason given' : 'no reason given';
  return obs(
    'tamper',
    subject,
    'critical',
    `the application or its configuration differs from what was provisioned (${typeof g.code === 'string' ? safeName(g.code) : 'PKS_TAMPERED'}: ${why}); the vault serves no key and the KMS sends no stock`,
    'A file of a PKS service or of its configuration was changed on this box. Restore it (or re-install the signed image): the vault opens again by itself at the next re-measurement (within a minute). Until maintenance has found out who changed it, treat the box as compromised.',
  );
}

// ---------------------------------------------------------------- KMS rejections

/**
 * Items the KMS rejected stay in the keystore (issue 9): one critical alert while any is kept.
 * A rejection is a record the OEM does not accept (a key reported for two ECUs, a proof that
 * does not match, a broken audit chain): a person must look, whatever the box does next.
 */
export function checkRejections(items: readonly { id: string; kind: string; code: string; detail: string }[]): Observation {
  const action = 'The KMS refused records of this box; see `pksctl outbox rejected` and the KMS fleet record, and clear the cause with the OEM. The records are kept.';
  if (items.length === 0) return obs('kms-rejected', 'outbox', 'ok', 'the KMS has rejected no record', '');
  const codes = [...new Set(items.map((i) => i.code))].slice(0, 5).join(', ');
  const last = items[items.length - 1]!;
  return obs('kms-rejected', 'outbox', 'critical', `the KMS rejected ${items.length}${items.length >= 100 ? '+' : ''} record(s) (${codes}); latest ${last.kind} ${last.id}: ${last.detail.slice(0, 120).replace(/[^\x20-\x7e]/g, '?')}`, action);
}

// ---------------------------------------------------------------- uplink

export interface UplinkInput {
  /** Last successful exchange with the KMS; null if never. */
  lastSyncAt: Date | string | null;
  /** Older than this: warning. */
  maxAgeMinutes: number;
  /** Older than this: critical. Default 4 x maxAgeMinutes. */
  criticalAgeMinutes?: number;
}

/** KMS link: how long since the last successful sync. */
export function checkUplink(u: UplinkInput, now: Date, subject = 'kms'): Observation {
  if (!u || typeof u !== 'object') fail('uplink input');
  const warn = num(u.maxAgeMinutes, 'uplink maxAgeMinutes', 1);
  const crit = num(u.criticalAgeMinutes ?? warn * 4, 'uplink criticalAgeMinutes', warn);
  const action = 'Check the WAN and the KMS broker connection (pksctl uplink status); stock is not refilled and reports wait while the link is down.';
  if (u.lastSyncAt === null) return obs('uplink-stale', subject, 'warning', 'no successful KMS sync yet', action);
  const last = date(u.lastSyncAt, 'uplink lastSyncAt');
  const age = (now.getTime() - last.getTime()) / MINUTE;
  const msg = `last KMS sync ${last.toISOString()}, ${Math.floor(age)} minutes ago (allowed ${warn})`;
  if (age > crit) return obs('uplink-stale', subject, 'critical', msg, action);
  if (age > warn) return obs('uplink-stale', subject, 'warning', msg, action, inBand(age, crit, tenth(crit), 'high'));
  return obs('uplink-stale', subject, 'ok', msg, '', inBand(age, warn, tenth(warn), 'high'));
}

// ---------------------------------------------------------------- failed tester logins

export interface AuthFailure {
  at: Date | string | number;
  /** Peer address (or, from older tester APIs, a tester id), for the message. */
  source?: string;
  /** CN of the certificate presented, when there was one. */
  cn?: string | null;
}

export interface AuthBurstOptions {
  windowMinutes?: number;
  /** More than this many failures in the window: warning. Default 20. */
  threshold?: number;
  /** More than this: critical. Default 5 x threshold. */
  criticalThreshold?: number;
}

/** Bursts of failed authentications on the tester API within a sliding window. */
export function checkAuthFailures(failures: AuthFailure[], now: Date, o: AuthBurstOptions = {}, subject = 'tester-api'): Observation {
  const windowMin = num(o.windowMinutes ?? 10, 'auth windowMinutes', 1);
  const warn = num(o.threshold ?? 20, 'auth threshold');
  const crit = num(o.criticalThreshold ?? warn * 5, 'auth criticalThreshold', warn);
  const from = now.getTime() - windowMin * MINUTE;
  const bySource = new Map<string, number>();
  let count = 0;
  for (const [i, f] of list<AuthFailure>(failures, 'auth failures').entries()) {
    const t = date(f?.at, `auth failures[${i}].at`).getTime();
    if (t < from || t > now.getTime()) continue;
    count++;
    const addr = f.source === undefined ? 'unknown' : safeName(f.source, 64) || 'unknown';
    const s = typeof f.cn === 'string' && f.cn !== '' ? `${addr} CN=${safeName(f.cn, 64)}` : addr;
    bySource.set(s, (bySource.get(s) ?? 0) + 1);
  }
  const top = [...bySource].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 3).map(([s, n]) => `${s} (${n})`);
  const msg = `${count} failed authentications in the last ${windowMin} minutes${count ? `, mostly from ${top.join(', ')}` : ''}`;
  const action = 'Find the tester or host behind the failures: a misconfigured tester certificate, or someone probing the plant network.';
  if (count > crit) return obs('auth-burst', subject, 'critical', msg, action);
  if (count > warn) return obs('auth-burst', subject, 'warning', msg, action, inBand(count, crit, tenth(crit), 'high'));
  return obs('auth-burst', subject, 'ok', msg, '', inBand(count, warn, tenth(warn), 'high'));
}

// ---------------------------------------------------------------- service health

export interface ServiceInput {
  name: string;
  healthy: boolean;
  lastSeen?: Date | string;
}

export interface ServiceHealthOptions {
  /** Not seen for longer: warning. Default 120. */
  staleSeconds?: number;
  /** Not seen for longer: critical. Default 600. */
  deadSeconds?: number;
}

/** Box services: unhealthy = critical; silent for a while = warning, then critical. */
export function checkServices(services: ServiceInput[], now: Date, o: ServiceHealthOptions = {}): Observation[] {
  const stale = num(o.staleSeconds ?? 120, 'service staleSeconds');
  const dead = num(o.deadSeconds ?? 600, 'service deadSeconds', stale);
  const action = 'Check the service (systemctl status pks-<name>, journalctl -u pks-<name>); systemd restarts it, a repeated failure needs a person.';
  return list<ServiceInput>(services, 'services').map((s, i) => {
    const n = name(s?.name, `services[${i}]`);
    if (typeof s.healthy !== 'boolean') fail(`services[${i}].healthy`);
    const act = action.replaceAll('<name>', safeName(n, 64));
    if (!s.healthy) return obs('service', n, 'critical', `service ${n} reports unhealthy`, act);
    if (s.lastSeen !== undefined) {
      const seen = date(s.lastSeen, `services[${i}].lastSeen`);
      const age = (now.getTime() - seen.getTime()) / 1000;
      const msg = `service ${n} last seen ${seen.toISOString()}, ${Math.floor(age)} s ago`;
      if (age > dead) return obs('service', n, 'critical', msg, act);
      if (age > stale) return obs('service', n, 'warning', msg, act, inBand(age, dead, tenth(dead), 'high'));
      return obs('service', n, 'ok', `service ${n} is healthy`, '', inBand(age, stale, tenth(stale), 'high'));
    }
    return obs('service', n, 'ok', `service ${n} is healthy`, '');
  });
}
