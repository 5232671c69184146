// The sentinel's wiring: collectors → alert engine → mail outbox and event outbox, driven by
// node-cron, plus its IPC face for pksctl. Everything that changes alert state goes through
// one queue, so a scheduled run, a retry of the mail queue and `run-now` never interleave
// (two overlapping evaluations could both decide the same reminder mail).
import { serveMetrics } from '../../appliance/metrics.js';
import { alertRegistry } from './prom-metrics.js';
import { ALERT_KINDS } from './mailer.js';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { asPksError, isPksError } from '../../appliance/errors.js';
import { ipcClient, startIpcServer, type IpcClient, type IpcServer, type VerbTable } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { runDir as defaultRunDir, socketPath } from '../../appliance/paths.js';
import { AlertEngine, type Alert, type AlertEvent } from './alerts.js';
import { LmdbAlertStore } from './alert-store.js';
import { Collector } from './collect.js';
import { GROUPS, mailerConfig, type Config, type Group } from './config.js';
import { Mailer, type MailerConfig } from './mailer.js';

const require = createRequire(import.meta.url);
const cron = require('node-cron') as typeof import('node-cron');
type ScheduledTask = import('node-cron').ScheduledTask;

export interface CycleSummary {
  at: string;
  groups: Group[];
  observations: number;
  events: number;
  mailsQueued: number;
  mailsSent: number;
  mailsFailed: number;
  mailsPending: number;
  held: number;
  open: number;
  eventsForwarded: number;
  eventsPending: number;
  skipped: string[];
  /** Groups whose evaluation failed (the store could not be written, ...). */
  errors: string[];
}

export interface AlertsView {
  open: Alert[];
  /** Newest first; only with state 'all'. */
  history?: AlertEvent[];
}

export interface SentinelOptions {
  log: Logger;
  runDir?: string;
  /** Instead of reading the `smtp-pass` credential (tests). */
  mail?: Readonly<MailerConfig>;
  /** Mailer retry backoff (tests). */
  mailBackoffMs?: number;
  /** Do not start the cron schedules (tests drive runNow). */
  manual?: boolean;
  /** Run all checks once right after start. Default true. */
  runAtStart?: boolean;
  /** The wall clock of every run (tests warp it: a day of SMTP outage in seconds). */
  now?: () => Date;
}

export interface Sentinel {
  runNow(): Promise<CycleSummary>;
  alerts(state: 'open' | 'all', limit: number): AlertsView;
  status(): string;
  stop(): Promise<void>;
}

/** Body of one alert event in the keystore's uplink outbox (≤ 32 properties, ≤ 8 KiB). */
export function outboxBody(e: AlertEvent, site: string, box: string): Record<string, unknown> {
  const a = e.alert;
  return {
    id: e.id.slice(0, 400),
    type: e.type,
    at: e.at,
    site,
    box,
    key: a.key,
    kind: a.kind,
    subject: a.subject,
    severity: e.type === 'resolved' ? 'ok' : a.severity,
    lastSeverity: a.severity,
    message: a.message.slice(0, 1000),
    ...(e.type !== 'resolved' && a.action ? { action: a.action.slice(0, 1000) } : {}),
    raisedAt: a.raisedAt,
    ...(a.resolvedAt ? { resolvedAt: a.resolvedAt } : {}),
  };
}

export async function startSentinel(cfg: Config, opts: SentinelOptions): Promise<Sentinel> {
  const log = opts.log;
  const run = opts.runDir ?? defaultRunDir();
  const mailCfg = opts.mail ?? mailerConfig(cfg);
  await mkdir(cfg.dataDir, { recursive: true, mode: 0o700 });
  const store = new LmdbAlertStore({ path: path.join(cfg.dataDir, 'alerts'), eventOutbox: true });
  const engine = new AlertEngine({ store, ...cfg.engine });
  const mailer = new Mailer(mailCfg, store, opts.mailBackoffMs !== undefined ? { backoffBaseMs: opts.mailBackoffMs, backoffMaxMs: opts.mailBackoffMs * 64 } : {});
  const vault: IpcClient = ipcClient(socketPath('vault', 'sentinel', run), { timeoutMs: 5000, connections: 2 });
  const keystore: IpcClient = ipcClient(socketPath('keystore', 'sentinel', run), { timeoutMs: 5000, connections: 2 });
  const testerApi: IpcClient | undefined = cfg.authFailures?.testerApi ? ipcClient(socketPath('tester-api', 'sentinel', run), { timeoutMs: 5000, connections: 1 }) : undefined;
  const uplink: IpcClient | undefined = cfg.uplink?.service ? ipcClient(socketPath('uplink', 'sentinel', run), { timeoutMs: 5000, connections: 1 }) : undefined;
  const collector = new Collector(cfg, { vault, keystore, runDir: run, ownStore: store, ...(testerApi ? { testerApi } : {}), ...(uplink ? { uplink } : {}) });

  let chain: Promise<unknown> = Promise.resolve();
  const queued = new Set<string>();
  let last: CycleSummary | undefined;
  let stopping = false;

  /** Runs `job` after everything queued before it; a job already waiting is not queued twice. */
  const enqueue = <T>(name: string | undefined, job: () => Promise<T>): Promise<T | undefined> => {
    if (name !== undefined) {
      if (queued.has(name)) return Promise.resolve(undefined);
      queued.add(name);
    }
    const p = chain.then(async () => {
      if (name !== undefined) queued.delete(name);
      if (stopping) return undefined;
      return job();
    });
    chain = p.catch(() => {});
    return p;
  };

  /** Hands queued events to the keystore's outbox; stops at the first transport failure. */
  const forward = async (): Promise<{ forwarded: number; pending: number }> => {
    let forwarded = 0;
    for (;;) {
      const batch = store.pendingEvents(50);
      if (batch.length === 0) break;
      for (const e of batch) {
        try {
          await keystore.call('outbox-put', { kind: 'alert', body: outboxBody(e, cfg.site, cfg.boxId) });
        } catch (err) {
          if (isPksError(err) && err.status >= 400 && err.status < 500 && !err.retry) {
            // refused for good (schema): keeping it would block every later event; it stays in the history
            log.error('alert event refused by the keystore outbox, dropped', { id: e.id, code: err.code });
          } else {
            return { forwarded, pending: store.pendingEvents(10_000).length };
          }
        }
        await store.removeEvent(e.id);
        forwarded++;
      }
    }
    return { forwarded, pending: 0 };
  };

  const clock = opts.now ?? (() => new Date());
  const cycle = async (groups: readonly Group[], withMail: boolean): Promise<CycleSummary> => {
    const now = clock();
    const s: CycleSummary = {
      at: now.toISOString(), groups: [...groups], observations: 0, events: 0, mailsQueued: 0, mailsSent: 0, mailsFailed: 0,
      mailsPending: 0, held: 0, open: 0, eventsForwarded: 0, eventsPending: 0, skipped: [], errors: [],
    };
    for (const g of groups) {
      try {
        const c = await collector.collect(g, now);
        s.skipped.push(...c.skipped);
        s.observations += c.observations.length;
        const r = await engine.evaluate(c.observations, now, { complete: c.complete });
        s.events += r.events.length;
        s.mailsQueued += r.mails.length;
        s.held = r.held;
        for (const e of r.events) log.info('alert', { type: e.type, alert: e.alert.key, severity: e.alert.severity, message: e.alert.message });
      } catch (err) {
        const e = asPksError(err);
        s.errors.push(`${g}: ${e.code}`);
        log.error('check group failed', { group: g, code: e.code, detail: e.detail, err: e.code === 'PKS_INTERNAL' ? err : undefined });
      }
    }
    try {
      const f = await forward();
      s.eventsForwarded = f.forwarded;
      s.eventsPending = f.pending;
    } catch (err) {
      s.errors.push(`forward: ${asPksError(err).code}`);
    }
    if (withMail || s.mailsQueued > 0) {
      try {
        const m = await mailer.flush(clock());
        s.mailsSent = m.sent;
        s.mailsFailed = m.failed;
        s.mailsPending = m.pending;
        if (m.failed > 0) log.warn('alert mails not delivered yet', { failed: m.failed, pending: m.pending, lastError: store.pendingMails()[0]?.lastError });
      } catch (err) {
        s.errors.push(`mail: ${asPksError(err).code}`);
      }
    } else s.mailsPending = store.pendingMails().length;
    s.open = engine.open().length;
    last = s;
    return s;
  };

  // the plant's Prometheus scrapes the alert states here (prom-metrics.ts), when configured
  const scrape = cfg.metrics
    ? await serveMetrics(alertRegistry({ open: () => engine.open(), mailsQueued: () => store.pendingMails().length, lastRunAt: () => last?.at, kinds: ALERT_KINDS }), cfg.metrics)
    : null;
  const tasks: ScheduledTask[] = [];
  const ipc: IpcServer = await startIpcServer({
    service: 'sentinel',
    dir: path.join(run, 'sentinel'),
    verbs: sentinelVerbs({
      alerts: (state, limit) => view(state, limit),
      runNow: async () => (await enqueue(undefined, () => cycle(GROUPS, true)))!,
    }),
    callers: SENTINEL_CALLERS,
    ...(cfg.ipc.groups ? { groups: cfg.ipc.groups as Record<string, number> } : {}),
    log,
    requestTimeoutMs: 120_000,
  });

  const view = (state: 'open' | 'all', limit: number): AlertsView => ({
    open: engine.open().sort((a, b) => (a.severity === b.severity ? a.raisedAt.localeCompare(b.raisedAt) : a.severity === 'critical' ? -1 : 1)),
    ...(state === 'all' ? { history: store.history(limit) } : {}),
  });

  if (!opts.manual) {
    for (const g of GROUPS) {
      tasks.push(cron.schedule(cfg.schedules[g], () => void enqueue(g, () => cycle([g], false)), { name: `sentinel-${g}` }));
    }
    tasks.push(cron.schedule(cfg.schedules.mail, () => void enqueue('mail', () => cycle([], true)), { name: 'sentinel-mail' }));
  }
  if (opts.runAtStart ?? true) void enqueue('start', () => cycle(GROUPS, true));

  return {
    runNow: async () => (await enqueue(undefined, () => cycle(GROUPS, true)))!,
    alerts: view,
    status() {
      const open = engine.open();
      const crit = open.filter((a) => a.severity === 'critical').length;
      return `watching; ${open.length} open alert(s), ${crit} critical; ${store.pendingMails().length} mail(s) queued${last ? `; last run ${last.at}` : ''}`;
    },
    async stop() {
      for (const t of tasks) await t.destroy();
      await scrape?.close();
      await ipc.close();
      stopping = true;
      await chain;
      await Promise.all([vault.close().catch(() => {}), keystore.close().catch(() => {}), testerApi?.close().catch(() => {}), uplink?.close().catch(() => {})]);
      await store.close();
    },
  };
}

export const SENTINEL_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  pksctl: ['alerts', 'run-now'],
});

export function sentinelVerbs(s: { alerts(state: 'open' | 'all', limit: number): AlertsView; runNow(): Promise<CycleSummary> }): VerbTable {
  return {
    alerts: {
      request: {
        type: 'object',
        additionalProperties: false,
        properties: { state: { enum: ['open', 'all'], default: 'open' }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
      },
      handler: (b: { state: 'open' | 'all'; limit: number }) => s.alerts(b.state, b.limit),
    },
    'run-now': {
      request: { type: 'object', additionalProperties: false, properties: {} },
      handler: () => s.runNow(),
    },
  };
}
