// Plant monitoring (issue 16 §4): an OpenMetrics endpoint for the plant's Prometheus, through
// prom-client. Each service that owns figures keeps its own registry and serves it on its own
// configured port (one scrape target per process, as Prometheus expects); this module is the
// shared part: the config fragment, the registry in OpenMetrics form and the small HTTP server.
// Plain HTTP on a configured address, loopback by default: the figures are counts, never keys,
// ids or tester names beyond their pool, and the port is reachable only where plant IT opens it.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';

export const METRICS_CONFIG = {
  type: 'object',
  additionalProperties: false,
  required: ['port'],
  properties: {
    /** an IP literal; loopback unless plant IT names the monitoring interface */
    host: { type: 'string', pattern: '^[0-9A-Fa-f:.]{2,45}$', default: '127.0.0.1' },
    port: { type: 'integer', minimum: 1, maximum: 65535 },
  },
} as const;

export interface MetricsListen {
  host: string;
  port: number;
}

export type Registry = client.Registry<typeof client.openMetricsContentType>;

export function newRegistry(): Registry {
  const r = new client.Registry<typeof client.openMetricsContentType>();
  r.setContentType(client.openMetricsContentType);
  return r;
}

export { client as prom };

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Serves GET /metrics (OpenMetrics text); anything else is 404, a failed collection 500. */
export async function serveMetrics(registry: Registry, listen: MetricsListen): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500, { 'content-type': 'text/plain' }).end('collection failed\n'),
    );
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
