// The tester API's OpenMetrics figures (issue 16 §4): it is where issuance happens as testers
// see it, so the request latency histograms, the responses by problem code and the issuance
// counter are measured here, where each request is timed; stock per pool is asked of the
// keystore (its `stats`, which this caller may read) at scrape time, so a scrape shows the
// store as it is, not a copy. The counters of Metrics (handshakes, refusals) are exported too.
import { newRegistry, prom, type Registry } from '../../appliance/metrics.js';
import type { Caller, Metrics } from './app.js';

/** Latency buckets in seconds: a package round trip is ms on a quiet box, seconds when starved. */
const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const STOCK_STATES = ['available', 'reserved', 'injected', 'reported', 'burned'] as const;

export interface PromMetrics {
  readonly registry: Registry;
  /** one answered request: its route template (never the path as sent), status, problem code */
  response(route: string, method: string, status: number, code: string, seconds: number): void;
  /** a new key left the box for a tester (not a retry that got the same package) */
  issued(pool: string): void;
}

export function promMetrics(o: { metrics: Metrics; keystore: Caller; timeoutMs: number }): PromMetrics {
  const registry = newRegistry();
  const latency = new prom.Histogram({ name: 'pks_tester_request_duration_seconds', help: 'tester API request latency by route', labelNames: ['route', 'method', 'status'], buckets: BUCKETS, registers: [registry] });
  const responses = new prom.Counter({ name: 'pks_tester_responses', help: 'tester API responses by route and problem code (ok when none)', labelNames: ['route', 'code'], registers: [registry] });
  const issued = new prom.Counter({ name: 'pks_keys_issued', help: 'new key packages handed to testers, by pool (rate() of it is the issuance rate)', labelNames: ['pool'], registers: [registry] });
  const m = o.metrics;
  const fromMetrics = (name: string, help: string, read: () => number): void =>
    void new prom.Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  fromMetrics('pks_tester_handshake_failures', 'TLS handshakes that failed', () => m.handshakeFailures);
  fromMetrics('pks_tester_auth_failures', 'requests refused for who the tester is', () => m.authFailures);
  fromMetrics('pks_tester_connections_refused', 'connections refused by the connection caps', () => m.connectionsRefused);
  fromMetrics('pks_tester_rate_limited', 'requests refused by the per-tester rate limit', () => m.rateLimited);
  fromMetrics('pks_tester_quota_exceeded', 'reservations refused by a quota', () => m.quotaExceeded);
  new prom.Gauge({
    name: 'pks_stock_keys',
    help: 'keys per pool and state, as the keystore holds them at scrape time',
    labelNames: ['pool', 'state'],
    registers: [registry],
    async collect() {
      const r = await o.keystore.call<{ pools: Record<string, Record<string, number>> }>('stats', {}, o.timeoutMs);
      this.reset();
      for (const [pool, s] of Object.entries(r.pools)) for (const st of STOCK_STATES) if (Number.isFinite(s[st])) this.set({ pool, state: st }, s[st]!);
    },
  });
  new prom.Gauge({
    name: 'pks_stock_minimum',
    help: 'the re-order threshold of each pool',
    labelNames: ['pool'],
    registers: [registry],
    async collect() {
      const r = await o.keystore.call<{ pools: Record<string, Record<string, number>> }>('stats', {}, o.timeoutMs);
      this.reset();
      for (const [pool, s] of Object.entries(r.pools)) if (Number.isFinite(s.minimum)) this.set({ pool }, s.minimum!);
    },
  });
  return {
    registry,
    response(route, method, status, code, seconds) {
      latency.observe({ route, method, status: String(status) }, seconds);
      responses.inc({ route, code });
    },
    issued: (pool) => issued.inc({ pool }),
  };
}
