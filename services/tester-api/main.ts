// pks-tester-api: the HTTPS/mTLS front for the EOL testers. It holds no key material: SHE
// packages and ECU certificates come from the keystore (which has the vault sign them).
import { loadConfig } from '../../appliance/config.js';
import { serveMetrics } from '../../appliance/metrics.js';
import path from 'node:path';
import { ipcClient, startIpcServer } from '../../appliance/ipc.js';
import { runDir, socketPath } from '../../appliance/paths.js';
import { runService } from '../../appliance/service.js';
import { createTesterApi } from './app.js';
import { loadTlsMaterial, testerApiSchema, type TesterApiConfig } from './config.js';

await runService('tester-api', async (log) => {
  const cfg = loadConfig<TesterApiConfig>(testerApiSchema);
  const tls = loadTlsMaterial(cfg);
  // enough connections for the testers working at once; each request holds one while it waits
  const keystore = ipcClient(socketPath('keystore', 'tester-api'), { timeoutMs: cfg.ipc.timeoutMs, connections: 64 });
  const vault = ipcClient(socketPath('vault', 'tester-api'), { timeoutMs: cfg.ipc.timeoutMs, connections: 8 });
  const api = await createTesterApi({ config: cfg, tls, keystore, vault, log });
  const addr = await api.listen();
  log.info('listening', { host: addr.address, port: addr.port });
  // the sentinel and pksctl read the counters (failed logins, limits) on a local socket
  const local = await startIpcServer({
    service: 'tester-api',
    dir: path.join(runDir(), 'tester-api'),
    verbs: { metrics: { request: { type: 'object', additionalProperties: false, properties: {} }, handler: () => api.metrics } },
    callers: { sentinel: ['metrics'], pksctl: ['metrics'] },
    ...(cfg.ipc.groups ? { groups: cfg.ipc.groups as Record<string, number> } : {}),
    log,
  });
  // the plant's Prometheus scrapes here (appliance/metrics.ts), when the site configured a port
  const scrape = cfg.metrics ? await serveMetrics(api.registry, cfg.metrics) : null;
  if (scrape) log.info('metrics endpoint', { host: cfg.metrics!.host, port: scrape.port });
  return {
    status: () => `serving on ${addr.address}:${addr.port}, ${api.metrics.requests} requests`,
    async stop() {
      await scrape?.close();
      await local.close();
      await api.close();
      await Promise.all([keystore.close(), vault.close()]);
    },
  };
});
