// pks-updater: signed A/B updates (updater.ts: the safe switch; remote.ts: manifests from the
// KMS; fetch.ts; floor.ts). Runs `rauc` as a D-Bus client of rauc.service, reads and raises the
// TPM version floor, calls the keystore (drain, update-health) on /run/pks/keystore/updater.sock,
// and serves pksctl and the uplink on /run/pks/updater/<caller>.sock. A reboot is asked by
// creating $rebootFile, which pks-update-reboot.path turns into `systemctl reboot`: the service
// itself holds no privilege over the machine.
import { readFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { ipcClient, startIpcServer, type IpcClient } from '../../appliance/ipc.js';
import { runDir, socketPath } from '../../appliance/paths.js';
import { runService } from '../../appliance/service.js';
import { writeFileDurably } from '../../appliance/durable-file.js';
import { PATH, ID, b64 } from '../../appliance/schema.js';
import { updaterSchema, type UpdaterConfig } from './config.js';
import { MAX_CHUNK_BYTES } from './manifest.js';
import { RemoteUpdates } from './remote.js';
import { Updater } from './updater.js';

function factoryVersion(): string {
  for (const f of ['/usr/lib/pks-release', new URL('../../package.json', import.meta.url)]) {
    try {
      const t = readFileSync(f, 'utf8');
      const v = typeof f === 'string' ? /^VERSION=(.*)$/m.exec(t)?.[1] : (JSON.parse(t) as { version: string }).version;
      if (v) return v;
    } catch {
      // next source
    }
  }
  return '0.0.0';
}

await runService('updater', async (log) => {
  const cfg = loadConfig<UpdaterConfig>(updaterSchema);
  const dir = path.join(runDir(), 'updater');
  mkdirSync(dir, { recursive: true });
  const keystore: IpcClient | null = cfg.health.keystore ? ipcClient(socketPath('keystore', 'updater'), { timeoutMs: 60_000, connections: 2 }) : null;
  const vault: IpcClient | null = cfg.health.vault ? ipcClient(socketPath('vault', 'updater'), { timeoutMs: 30_000, connections: 1 }) : null;
  const uplink = ipcClient(socketPath('uplink', 'updater'), { timeoutMs: 5_000, connections: 1 });
  // best effort: a report that cannot go now is in the status the uplink publishes later
  const report = (e: Record<string, unknown>): void => void uplink.call('update-report', { event: e }).catch(() => undefined);
  const updater = new Updater({
    stateDir: cfg.stateDir,
    rauc: { conf: cfg.rauc.conf, reportDir: dir, env: { PKS_UPDATE_REPORT_DIR: dir } },
    compatible: cfg.compatible,
    ...(cfg.tcti ? { tcti: cfg.tcti } : {}),
    keystore,
    vault,
    health: cfg.health,
    drain: cfg.drain,
    reboot: async () => {
      log.info('asking for a reboot');
      writeFileDurably(cfg.rebootFile, new Date().toISOString());
    },
    factoryVersion: factoryVersion(),
    log,
    report,
  });
  await updater.recover();
  let remote: RemoteUpdates | null = null;
  if (cfg.manifests) {
    let pem: string;
    try {
      pem = readFileSync(cfg.manifests.kmsCaFile, 'utf8');
    } catch {
      throw pksError('PKS_CONFIG_INVALID', 'manifests.kmsCaFile cannot be read');
    }
    remote = new RemoteUpdates(updater, { boxId: cfg.boxId, compatible: cfg.compatible, kmsCaPem: pem, maxBytes: cfg.manifests.maxBytes, maintenanceCron: cfg.manifests.maintenanceCron, maintenanceWindowSeconds: cfg.manifests.maintenanceWindowSeconds, log, report });
    remote.start();
  }
  const inbox = path.join(cfg.stateDir, 'inbox');
  mkdirSync(inbox, { recursive: true, mode: 0o700 });
  const empty = { type: 'object', additionalProperties: false, properties: {} } as const;
  const ipc = await startIpcServer({
    service: 'updater',
    dir,
    verbs: {
      status: { request: empty, handler: () => updater.status() },
      install: {
        request: { type: 'object', additionalProperties: false, required: ['file'], properties: { file: PATH } },
        handler: async (b: { file: string }) => {
          // pksctl drops the bundle into our inbox (it runs as root); nothing else is read
          const file = path.resolve(b.file);
          if (path.dirname(file) !== inbox) throw pksError('PKS_BAD_REQUEST', `bundle must be in ${inbox}`);
          return updater.install(file, 'file');
        },
      },
      manifest: {
        request: { type: 'object', additionalProperties: false, required: ['manifest'], properties: { manifest: { type: 'string', maxLength: 32 * 1024 } } },
        handler: (b: { manifest: string }) => {
          if (!remote) throw pksError('PKS_UPDATE_MANIFEST', 'this box takes no manifests (no manifests.kmsCaFile)');
          return remote.onManifest(b.manifest);
        },
      },
      chunk: {
        request: { type: 'object', additionalProperties: false, required: ['id', 'i', 'data'], properties: { id: ID, i: { type: 'integer', minimum: 0, maximum: 1_000_000 }, data: b64(MAX_CHUNK_BYTES) } },
        maxBytes: 200 * 1024,
        handler: (b: { id: string; i: number; data: string }) => {
          if (!remote) throw pksError('PKS_UPDATE_MANIFEST', 'this box takes no manifests');
          return remote.onChunk(b);
        },
      },
    },
    callers: { pksctl: ['status', 'install'], uplink: ['status', 'manifest', 'chunk'] },
    ...(cfg.ipc.groups ? { groups: cfg.ipc.groups as Record<string, number> } : {}),
    log,
  });
  return {
    status: () => {
      const s = updater.status();
      return `${s.phase}; slot ${s.booted.slot} ${s.booted.version}; floor ${s.floor ?? '?'}`;
    },
    async stop() {
      await ipc.close();
      await remote?.stop();
      await Promise.all([keystore?.close(), vault?.close(), uplink.close()]);
    },
  };
});
