// Collectors: gather what the checks need from the other services (IPC), files and the file
// system, and turn it into observations through the pure checks in checks.ts. A source that
// fails is itself a finding (a service that does not answer, a certificate that cannot be
// read, a check that cannot run), never a crash; an optional source that is simply not
// there (no uplink status file yet, no grant list in the keystore) is skipped and said so.
import { access, readFile } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import net from 'node:net';
import { open as openLmdb } from 'lmdb';
import { asPksError, isPksError, pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import type { IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import type { Level, Observation } from './alerts.js';
import {
  checkApplicationGate, checkAuthFailures, checkCertificates, checkGrants, checkHsm, checkRejections, checkServices, checkStock, checkStorage, checkUplink,
  type AuthFailure, type CertInput, type DiskInput, type GrantInput, type MapUsageInput, type ServiceInput, type StockInput,
} from './checks.js';
import type { Config, Group } from './config.js';
import { diskUsage, lmdbUsage } from './probes.js';
import { safeName } from './text.js';

const DAY = 86_400_000;
const MAX_FILE = 1 << 20;

export interface CollectResult {
  group: Group;
  observations: Observation[];
  /** Kinds whose observation list is complete in this run (see EvaluateOptions.complete). */
  complete: string[];
  /** Sources skipped because they are not there (not a finding). */
  skipped: string[];
}

export interface CollectorDeps {
  /** Clients on the vault's and the keystore's `sentinel` sockets. */
  vault: IpcClient;
  keystore: IpcClient;
  /** Client on the tester API's `sentinel` socket (failed logins), when configured. */
  testerApi?: IpcClient;
  /** Client on the uplink's `sentinel` socket (last sync), when configured. */
  uplink?: IpcClient;
  /** Where the other services' sockets live ($PKS_RUN_DIR or /run/pks). */
  runDir: string;
  /** The sentinel's own store, for its map usage. */
  ownStore?: { getStats(): unknown };
  /** Timeout of one IPC probe. */
  timeoutMs?: number;
}

/** What `stats` of the keystore says about one pool (critical is optional: newer keystores). */
interface PoolStats {
  available: number;
  reserved: number;
  injected: number;
  reported: number;
  burned: number;
  minimum: number;
  critical?: number;
}

function obs(kind: string, subject: string, severity: Level, message: string, action: string): Observation {
  const s = safeName(subject);
  return { key: `${kind}:${s}`, kind, subject: s, severity, message, action };
}

const reason = (e: unknown): string => {
  const p = asPksError(e);
  return p.code === 'PKS_INTERNAL' ? 'PKS_INTERNAL' : `${p.code}: ${safeName(p.detail, 120)}`;
};

/** The other side is not there (or too slow): the health group reports that, once. */
const unreachable = (e: unknown): boolean => isPksError(e) && (e.code === 'PKS_IPC_UNAVAILABLE' || e.code === 'PKS_IPC_TIMEOUT');

async function readJson(file: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw pksError('PKS_CONFIG_UNREADABLE', `${file}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  if (text.length > MAX_FILE) throw pksError('PKS_TOO_LARGE', file);
  return parseJsonOr('PKS_BAD_REQUEST', file, text);
}

/** A unix socket that accepts a connection within `ms`. */
function accepts(sock: string, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(sock);
    const timer = setTimeout(() => {
      s.destroy();
      reject(pksError('PKS_IPC_TIMEOUT', sock));
    }, ms);
    s.once('connect', () => {
      clearTimeout(timer);
      s.end();
      s.destroy();
      resolve();
    });
    s.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(pksError('PKS_IPC_UNAVAILABLE', `${e.code ?? 'connection failed'}`));
    });
  });
}

export class Collector {
  private readonly cfg: Config;
  private readonly deps: CollectorDeps;
  private readonly timeout: number;
  /** pool → samples of keys consumed so far (left AVAILABLE), for the burn rate per day. */
  private readonly samples = new Map<string, Array<{ t: number; consumed: number }>>();

  constructor(cfg: Config, deps: CollectorDeps) {
    this.cfg = cfg;
    this.deps = deps;
    this.timeout = deps.timeoutMs ?? 5000;
  }

  async collect(group: Group, now: Date): Promise<CollectResult> {
    const r: CollectResult = { group, observations: [], complete: [], skipped: [] };
    try {
      await this.run(group, now, r);
      r.observations.push(obs('collector', group, 'ok', `the ${group} checks run`, ''));
      r.complete.push('collector');
    } catch (e) {
      // Keep what was observed before the failure; nothing is resolved by omission.
      r.complete = [];
      r.observations.push(
        obs('collector', group, 'warning', `the ${group} checks cannot run (${reason(e)})`, 'Check the sentinel log (journalctl -u pks-sentinel) and its config; until this is fixed these conditions are not watched.'),
      );
    }
    // one observation per key: a later one (the failure note) never duplicates an earlier one
    const seen = new Set<string>();
    r.observations = r.observations.filter((o) => !seen.has(o.key) && seen.add(o.key));
    return r;
  }

  private async run(group: Group, now: Date, r: CollectResult): Promise<void> {
    switch (group) {
      case 'health':
        return this.health(now, r);
      case 'stock':
        return this.stock(now, r);
      case 'storage':
        return this.storage(r);
      case 'certificates':
        return this.certificates(now, r);
      case 'uplink':
        return this.uplink(now, r);
      case 'auth':
        return this.auth(now, r);
    }
  }

  // ------------------------------------------------------------ HSM and service health

  private async health(now: Date, r: CollectResult): Promise<void> {
    const services: ServiceInput[] = [];
    const why = new Map<string, string>();
    const watched = new Set(this.cfg.services);

    let vault: { ready?: unknown; error?: unknown; hsm?: { loggedIn?: unknown }; gate?: { open?: unknown; code?: unknown; reason?: unknown } } | undefined;
    try {
      vault = await this.deps.vault.call('status', {}, this.timeout);
    } catch (e) {
      why.set('vault', reason(e));
    }
    if (vault === undefined) {
      const o = checkHsm({ reachable: false, loggedIn: false });
      o.message = 'the vault does not answer, so the HSM cannot be used; key issuance is stopped';
      o.action = 'Check the vault service (systemctl status pks-vault) and the HSM behind it.';
      r.observations.push(o);
    } else if (vault.ready === true) {
      r.observations.push(checkHsm({ reachable: true, loggedIn: vault.hsm?.loggedIn === true }));
    } else {
      r.observations.push(checkHsm({ reachable: vault.error === 'PKS_HSM_LOGIN', loggedIn: false }));
    }
    if (watched.has('vault')) services.push({ name: 'vault', healthy: vault !== undefined });
    // issue 12: a vault with an application gate says whether it is open; one without says nothing
    if (vault?.gate && typeof vault.gate.open === 'boolean') {
      const g = vault.gate;
      r.observations.push(checkApplicationGate({ open: g.open as boolean, ...(typeof g.code === 'string' ? { code: g.code } : {}), ...(typeof g.reason === 'string' ? { reason: g.reason } : {}) }));
      r.complete.push('tamper');
    }

    for (const name of this.cfg.services) {
      if (name === 'vault') continue;
      try {
        if (name === 'keystore') await this.deps.keystore.call('stats', {}, this.timeout);
        else await accepts(socketPath(name, 'sentinel', this.deps.runDir), this.timeout);
        services.push({ name, healthy: true });
      } catch (e) {
        why.set(name, reason(e));
        services.push({ name, healthy: false });
      }
    }
    for (const o of checkServices(services, now, this.cfg.thresholds.services)) {
      const w = why.get(o.subject);
      if (w) o.message = `service ${o.subject} does not answer on its socket (${w})`;
      r.observations.push(o);
    }
    r.complete.push('service');
    await this.attest(r);
  }

  /** Measured boot: a TPM that does not answer, or values that are not the expected ones. */
  private async attest(r: CollectResult): Promise<void> {
    const a = this.cfg.attest;
    if (!a?.enabled) {
      r.skipped.push('attest: not enabled');
      return;
    }
    const { attestStatus } = await import('../attest/verify.js');
    try {
      const st = await attestStatus({
        ...(a.tcti ? { tcti: a.tcti } : {}),
        ...(a.expectedPath ? { expectedPath: a.expectedPath } : {}),
        ...(a.measurementsPath ? { measurementsPath: a.measurementsPath } : {}),
      });
      r.observations.push(
        st.ok
          ? obs('tpm', 'measured-boot', 'ok', 'measured boot matches the expected values', '')
          : obs('tpm', 'measured-boot', 'critical', `measured boot does not match: ${st.problems.slice(0, 3).join('; ')}`, 'The firmware, the application or its configuration differ from what was installed. Do not trust this box until maintenance has checked it (pksctl status).'),
      );
    } catch (e) {
      r.observations.push(obs('tpm', 'measured-boot', 'critical', `the TPM cannot be read (${reason(e)})`, 'Check the TPM (tpm2_pcrread) and the boot; the vault cannot unseal without it.'));
    }
    r.complete.push('tpm');
  }

  // ------------------------------------------------------------ key stock

  private async stock(now: Date, r: CollectResult): Promise<void> {
    let res: { pools?: unknown };
    try {
      res = await this.deps.keystore.call<{ pools?: unknown }>('stats', {}, this.timeout);
    } catch (e) {
      if (unreachable(e)) {
        r.skipped.push('stock: keystore not reachable');
        return;
      }
      throw e;
    }
    const pools = res.pools;
    if (!pools || typeof pools !== 'object') throw pksError('PKS_IPC_PROTOCOL', 'keystore stats: pools');
    const input: StockInput[] = [];
    const t = now.getTime();
    const windowMs = this.cfg.thresholds.burnWindowHours * 3_600_000;
    for (const [pool, raw] of Object.entries(pools as Record<string, PoolStats>)) {
      const consumed = raw.reserved + raw.injected + raw.reported + raw.burned;
      if (!Number.isFinite(consumed)) throw pksError('PKS_IPC_PROTOCOL', `keystore stats: ${safeName(pool, 64)}`);
      input.push({
        pool,
        available: raw.available,
        minimum: raw.minimum,
        critical: Math.min(raw.minimum, this.cfg.thresholds.stockCritical[pool] ?? raw.critical ?? Math.floor(raw.minimum / 4)),
        burnRatePerDay: this.burnRate(pool, t, consumed, windowMs),
      });
    }
    for (const p of this.samples.keys()) if (!(p in pools)) this.samples.delete(p);
    r.observations.push(...checkStock(input));
    r.complete.push('stock-low');
  }

  /** Keys per day that left the pool over the window; 0 until 10 minutes have been seen. */
  private burnRate(pool: string, t: number, consumed: number, windowMs: number): number {
    let s = this.samples.get(pool) ?? [];
    // counters went back: another keystore data set, start over
    if (s.length > 0 && consumed < s[s.length - 1]!.consumed) s = [];
    s.push({ t, consumed });
    while (s.length > 2 && t - s[1]!.t >= windowMs) s.shift();
    if (s.length > 1000) s.splice(1, s.length - 1000);
    this.samples.set(pool, s);
    const first = s[0]!;
    const span = t - first.t;
    if (span < 10 * 60_000) return 0;
    return ((consumed - first.consumed) * DAY) / span;
  }

  // ------------------------------------------------------------ storage

  private async storage(r: CollectResult): Promise<void> {
    const maps: MapUsageInput[] = [];
    if (this.deps.ownStore) maps.push(lmdbUsage('sentinel', this.deps.ownStore));
    const ks = this.cfg.storage.keystoreDataDir;
    if (ks) {
      const usage = await keystoreUsage(ks, this.cfg.storage.keystoreMapSizeMb * 1024 * 1024);
      if (usage) maps.push(usage);
      else r.skipped.push('storage: keystore LMDB not readable');
    }
    const paths = [...new Set(this.cfg.storage.disks.length > 0 ? this.cfg.storage.disks : [this.cfg.dataDir, ...(ks ? [ks] : [])])];
    const disks: DiskInput[] = [];
    for (const p of paths) disks.push(await diskUsage(p));
    r.observations.push(...checkStorage({ maps, disks }, this.cfg.thresholds.storage));
  }

  // ------------------------------------------------------------ certificates and grants

  private async certificates(now: Date, r: CollectResult): Promise<void> {
    const certs: CertInput[] = [];
    for (const c of this.cfg.certificates) {
      let pem: string;
      try {
        pem = await readFile(c.path, 'utf8');
      } catch (e) {
        r.observations.push(
          obs('cert-expiry', c.name, 'critical', `certificate file ${c.path} cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`, 'Restore the certificate file (or fix its permissions); the services using it cannot start.'),
        );
        continue;
      }
      certs.push({ name: c.name, pem: pem.length > MAX_FILE ? '' : pem });
    }
    r.observations.push(...checkCertificates(certs, now, this.cfg.thresholds.certificates));
    r.complete.push('cert-expiry');

    const grants = await this.grants(r);
    if (grants) {
      r.observations.push(...checkGrants(grants, now, this.cfg.thresholds.grants));
      r.complete.push('grant-expiry');
    }
  }

  /** Tester grants from the keystore (`tester-list`, when it has one) or a file; undefined = none. */
  private async grants(r: CollectResult): Promise<GrantInput[] | undefined> {
    const out: GrantInput[] = [];
    let found = false;
    if (this.cfg.grants.keystore) {
      try {
        const res = await this.deps.keystore.call<{ items?: unknown }>('tester-list', {}, this.timeout);
        if (!Array.isArray(res.items)) throw pksError('PKS_IPC_PROTOCOL', 'tester-list: items');
        for (const t of res.items as Array<{ cn?: unknown; expiresAt?: unknown; revoked?: unknown }>) {
          if (t?.revoked === true) continue;
          out.push({ tester: t?.cn as string, expiresAt: t?.expiresAt as string });
        }
        found = true;
      } catch (e) {
        // no grant list offered (or not to us), or the keystore is down: not a finding here
        if (!(isPksError(e) && ['PKS_IPC_UNKNOWN_VERB', 'PKS_IPC_FORBIDDEN', 'PKS_IPC_UNAVAILABLE', 'PKS_IPC_TIMEOUT'].includes(e.code))) throw e;
        r.skipped.push(`grants: keystore (${e.code})`);
      }
    }
    if (this.cfg.grants.file) {
      const data = (await readJson(this.cfg.grants.file)) as { grants?: unknown } | undefined;
      if (data === undefined) r.skipped.push('grants: file absent');
      else {
        if (!Array.isArray(data?.grants)) throw pksError('PKS_BAD_REQUEST', 'grants file: grants');
        out.push(...(data.grants as GrantInput[]));
        found = true;
      }
    }
    return found ? out : undefined;
  }

  // ------------------------------------------------------------ uplink

  private async uplink(now: Date, r: CollectResult): Promise<void> {
    await this.rejections(r);
    const u = this.cfg.uplink;
    if (!u) {
      r.skipped.push('uplink: not configured');
      return;
    }
    let data: { lastSyncAt?: unknown } | undefined;
    if (u.service && this.deps.uplink) {
      try {
        data = await this.deps.uplink.call<{ lastSyncAt?: unknown }>('status', {}, this.timeout);
      } catch (e) {
        // the health group reports a socket that does not answer
        if (unreachable(e)) {
          r.skipped.push('uplink: not reachable');
          return;
        }
        throw e;
      }
    } else if (u.statusFile) {
      data = (await readJson(u.statusFile)) as { lastSyncAt?: unknown } | undefined;
      if (data === undefined) {
        r.skipped.push('uplink: status file absent');
        return;
      }
    } else {
      r.skipped.push('uplink: not configured');
      return;
    }
    const last = data?.lastSyncAt;
    if (last !== null && typeof last !== 'string') throw pksError('PKS_BAD_REQUEST', 'uplink status: lastSyncAt');
    r.observations.push(
      checkUplink({ lastSyncAt: last, maxAgeMinutes: u.maxSyncAgeMinutes, ...(u.criticalSyncAgeMinutes !== undefined ? { criticalAgeMinutes: u.criticalSyncAgeMinutes } : {}) }, now),
    );
  }

  /** Outbox items the KMS rejected (e.g. PKS_CONFLICT: one key reported for two ECUs), kept by the keystore. */
  private async rejections(r: CollectResult): Promise<void> {
    let items: { id: string; kind: string; code: string; detail: string }[];
    try {
      ({ items } = await this.deps.keystore.call<{ items: typeof items }>('outbox-rejected', { limit: 100 }, this.timeout));
    } catch (e) {
      // a keystore that does not answer is the health group's finding; one without the verb
      // (older) simply has no such check: neither stops the uplink checks
      if (unreachable(e) || (isPksError(e) && (e.code === 'PKS_IPC_UNKNOWN_VERB' || e.code === 'PKS_IPC_FORBIDDEN'))) return;
      throw e;
    }
    r.observations.push(checkRejections(items));
    r.complete.push('kms-rejected');
  }

  // ------------------------------------------------------------ failed tester logins

  private async auth(now: Date, r: CollectResult): Promise<void> {
    const a = this.cfg.authFailures;
    if (!a || (!a.file && !a.testerApi)) {
      r.skipped.push('auth: not configured');
      return;
    }
    let failures: unknown;
    if (a.testerApi && this.deps.testerApi) {
      try {
        failures = (await this.deps.testerApi.call<{ recentAuthFailures?: unknown }>('metrics', {}, this.timeout)).recentAuthFailures;
      } catch (e) {
        if (unreachable(e)) {
          r.skipped.push('auth: tester-api not reachable');
          return;
        }
        throw e;
      }
    } else if (a.file) {
      const data = (await readJson(a.file)) as { failures?: unknown } | undefined;
      if (data === undefined) {
        r.skipped.push('auth: file absent');
        return;
      }
      failures = data?.failures;
    }
    if (!Array.isArray(failures)) throw pksError('PKS_BAD_REQUEST', 'auth failures: failures');
    r.observations.push(checkAuthFailures(failures as AuthFailure[], now, this.cfg.thresholds.auth));
  }
}

/**
 * Map usage of the keystore's LMDB, opened read-only (LMDB is multi-process safe; the
 * keystore stays the only writer), against the map size the keystore is configured with.
 * Undefined when it is not there or not readable for us.
 */
export async function keystoreUsage(dir: string, mapSize: number): Promise<MapUsageInput | undefined> {
  try {
    await access(`${dir}/data.mdb`, fsConstants.R_OK);
  } catch {
    return undefined;
  }
  let env: ReturnType<typeof openLmdb> | undefined;
  try {
    env = openLmdb({ path: dir, readOnly: true, maxDbs: 20 });
    const u = lmdbUsage('keystore', env);
    return { ...u, mapSize: Math.max(u.mapSize, mapSize) };
  } catch {
    return undefined;
  } finally {
    await env?.close().catch(() => {});
  }
}
