// The sentinel's OpenMetrics figures (issue 16 §4): the alert states are the sentinel's own, so
// they are served here, read from the alert engine at scrape time (what is open now, by kind and
// severity), with the mails still queued and the time of the last check run. Subjects (pool,
// tester, certificate names) stay out of the labels: the plant's dashboards count, the mail and
// `pksctl alerts` name.
import { newRegistry, prom, type Registry } from '../../appliance/metrics.js';

const LEVELS = ['warning', 'critical'] as const;

export function alertRegistry(o: { open: () => readonly { kind: string; severity: string }[]; mailsQueued: () => number; lastRunAt: () => string | undefined; kinds: readonly string[] }): Registry {
  const registry = newRegistry();
  new prom.Gauge({
    name: 'pks_alerts_open',
    help: 'open alerts by kind and severity (0 for the kinds the sentinel checks and finds fine)',
    labelNames: ['kind', 'severity'],
    registers: [registry],
    collect() {
      this.reset();
      const open = o.open();
      const kinds = new Set([...o.kinds, ...open.map((a) => a.kind)]);
      for (const kind of kinds) for (const severity of LEVELS) this.set({ kind, severity }, open.filter((a) => a.kind === kind && a.severity === severity).length);
    },
  });
  new prom.Gauge({
    name: 'pks_alert_mails_queued',
    help: 'alert mails not yet accepted by the SMTP relay',
    registers: [registry],
    collect() {
      this.set(o.mailsQueued());
    },
  });
  new prom.Gauge({
    name: 'pks_sentinel_last_run_timestamp_seconds',
    help: 'when the checks last ran (0: not yet)',
    registers: [registry],
    collect() {
      const at = o.lastRunAt();
      this.set(at ? Date.parse(at) / 1000 : 0);
    },
  });
  return registry;
}
