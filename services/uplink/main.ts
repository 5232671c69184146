// pks-uplink: the box's link to the central KMS (see uplink.ts, topics.ts).
// Config: $PKS_CONFIG (config.ts). Credentials: `mqtt-key` (PEM key of the box's MQTT client
// certificate; mqtt.keyFile for development); after an ops rotate-cert, the rotated key and
// certificate in the state dir take their place (identity.ts). Talks to the keystore and the vault on
// /run/pks/<service>/uplink.sock.
import { readFileSync } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { loadConfig, readCredential } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { ipcClient, startIpcServer } from '../../appliance/ipc.js';
import { runDir, socketPath } from '../../appliance/paths.js';
import { runService } from '../../appliance/service.js';
import { loadOpsKey } from '../../appliance/contracts/commands.js';
import { uplinkSchema, type UplinkConfig } from './config.js';
import { Uplink } from './uplink.js';
import { UpdateRelay } from './update-relay.js';

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

await runService('uplink', async (log) => {
  const cfg = structuredClone(loadConfig<UplinkConfig>(uplinkSchema)) as UplinkConfig;
  let opsPem: string;
  try {
    opsPem = readFileSync(cfg.opsPublicKeyFile, 'utf8');
  } catch {
    throw pksError('PKS_CONFIG_INVALID', 'ops public key file cannot be read');
  }
  const keystore = ipcClient(socketPath('keystore', 'uplink'), { timeoutMs: 30_000 });
  const vault = ipcClient(socketPath('vault', 'uplink'), { timeoutMs: 10_000 });
  const updaterClient = ipcClient(socketPath('updater', 'uplink'), { timeoutMs: 30_000, connections: 2 });
  // the relay publishes through the uplink it is handed to (called only once both exist)
  const updates: UpdateRelay = new UpdateRelay(updaterClient, (body): Promise<void> => uplink.publishUpdateStatus(body), log);
  const uplink = new Uplink({ cfg, keystore, vault, opsKey: loadOpsKey(opsPem), mqttKey: readCredential('mqtt-key', cfg.mqtt.keyFile), log, version: version(), updates });
  await uplink.start();
  // what the sentinel watches: a status file in the runtime dir (last sync) and a socket that
  // answers (liveness); pksctl can ask the same
  const dir = path.join(runDir(), 'uplink');
  await mkdir(dir, { recursive: true });
  const status = () => ({ connected: uplink.connected, mode: uplink.schedule.mode, lastSyncAt: uplink.state.state.lastSync, reorders: uplink.state.state.reorders, pending: Object.keys(uplink.state.state.pending), safeMode: uplink.safeMode });
  const writeStatus = async (): Promise<void> => {
    const file = path.join(dir, 'status.json');
    await writeFile(`${file}.tmp`, JSON.stringify(status()));
    await rename(`${file}.tmp`, file);
  };
  await writeStatus();
  const statusTimer = setInterval(() => void writeStatus().catch((e) => log.warn('status file not written', { err: e })), 5_000);
  statusTimer.unref();
  const local = await startIpcServer({
    service: 'uplink',
    dir,
    verbs: {
      status: { request: { type: 'object', additionalProperties: false, properties: {} }, handler: status },
      // issue 16 §3: pksctl zeroize, steps 1 and 4 (uplink.ts finalSync, reportZeroized)
      'final-sync': {
        request: { type: 'object', additionalProperties: false, required: ['nonce'], properties: { nonce: { type: 'string', pattern: '^[0-9a-f]{32}$' }, timeoutSeconds: { type: 'integer', minimum: 1, maximum: 3600, default: 60 } } },
        handler: (b: { nonce: string; timeoutSeconds: number }) => uplink.finalSync(b.nonce, b.timeoutSeconds * 1000),
      },
      zeroized: {
        request: { type: 'object', additionalProperties: false, required: ['nonce'], properties: { nonce: { type: 'string', pattern: '^[0-9a-f]{32}$' } } },
        handler: (b: { nonce: string }) => uplink.reportZeroized(b.nonce),
      },
      'update-report': {
        request: { type: 'object', additionalProperties: false, required: ['event'], properties: { event: { type: 'object', maxProperties: 16 } } },
        maxBytes: 8192,
        handler: (b: { event: Record<string, unknown> }) => (updates.report(b.event), { ok: true }),
      },
    },
    callers: { sentinel: ['status'], pksctl: ['status', 'final-sync', 'zeroized'], updater: ['update-report'] },
    ...(cfg.ipc?.groups ? { groups: cfg.ipc.groups } : {}),
    log,
  });
  return {
    status: () => `${uplink.schedule.mode}, ${uplink.connected ? 'connected' : 'not connected'}`,
    async stop() {
      clearInterval(statusTimer);
      await local.close();
      await uplink.stop();
      await Promise.all([keystore.close(), vault.close(), updaterClient.close()]);
    },
  };
});
