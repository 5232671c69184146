// pks-sentinel: watches the box (HSM, stock, storage, certificates, KMS link, failed logins,
// service health) on node-cron schedules and reports by e-mail and through the uplink outbox.
import { runService } from '../../appliance/service.js';
import { loadSentinelConfig } from './config.js';
import { startSentinel } from './sentinel.js';

await runService('sentinel', async (log) => {
  const cfg = loadSentinelConfig();
  const s = await startSentinel(cfg, { log });
  return { status: () => s.status(), stop: () => s.stop() };
});
