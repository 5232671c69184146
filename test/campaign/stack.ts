// The stack the kill campaign runs against, all real and each its own process: mosquitto (TLS,
// client certificates, ACLs), the reference KMS, the vault on a fresh SoftHSM token, the
// keystore on LMDB, the uplink (MQTT v5 to the KMS) and the tester API (mTLS). Stock starts
// empty and comes from the KMS over MQTT, re-ordered by the uplink as the line uses it. Every
// service the killer aims at can be restarted on its own state, as systemd restarts a unit.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';
import { LOAD_QUOTAS, startBox, type Box } from '../../scripts/plant/box.js';
import { startBroker, type TestBroker } from '../../scripts/plant/broker.js';
import { registerBox, writeUplinkConfig } from '../../scripts/plant/enrol.js';
import { startKms, type TestKms } from '../../scripts/plant/kms.js';
import { startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { startTesterApi, type TesterApiHandle } from '../../scripts/plant/tester-api.js';
import { ensureServiceUsers, serviceUser } from '../../scripts/plant/users.js';

export const KILL_TARGETS = ['vault', 'keystore', 'tester-api', 'uplink'] as const;
export type KillTarget = (typeof KILL_TARGETS)[number];

export interface CampaignPool {
  pool: string;
  keyId: number;
  masterKey: Buffer;
}

export interface CampaignStack {
  base: string;
  boxId: string;
  broker: TestBroker;
  kms: TestKms;
  box: Box;
  api: TesterApiHandle;
  pools: CampaignPool[];
  uplinkDir: string;
  /** the running process of a target (the handles swap it on restart) */
  proc(t: KillTarget): Proc;
  /** start a target again on its own state and wait until it serves */
  restart(t: KillTarget): Promise<void>;
  stats(): Promise<StatsResponse['pools']>;
  stop(): Promise<void>;
}

const POOLS = [
  { pool: 'oem1.bcm.key4', keyId: 4 },
  { pool: 'oem1.gateway.key5', keyId: 5 },
];

export async function startCampaignStack(o: { base: string; testers: number; minimum: number; reorder: number }): Promise<CampaignStack> {
  const boxId = 'box-campaign-01';
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch(() => {});
  };
  try {
    await mkdir(o.base, { recursive: true });
    const broker = await startBroker();
    stops.push(() => broker.stop());
    const kms = await startKms(broker, path.join(o.base, 'kms'));
    stops.push(() => kms.stop());
    const box = await startBox({ base: path.join(o.base, 'box'), boxId, pools: POOLS.map((p) => ({ pool: p.pool, minimum: o.minimum, reorder: o.reorder })), checkpointEvery: 200, kmsCa: kms.caCert, quotas: LOAD_QUOTAS });
    stops.push(() => box.stop());
    // the vault handle's stop() knows only the process it started: a restarted vault is stopped here
    stops.push(() => box.vault.proc.stop());
    const pools = POOLS.map((p) => ({ ...p, masterKey: randomBytes(16) }));

    await registerBox(kms, box);
    const oemFile = path.join(o.base, 'oem-keys.json');
    // `generate` makes the KMS pool growable: re-orders beyond it get fresh keys
    await writeFile(oemFile, JSON.stringify({ v: 1, oem: 'oem1', pools: pools.map((p) => ({ pool: p.pool, she: { keyId: p.keyId, authKeyId: 1, counter: 1, flags: 0 }, authKey: p.masterKey.toString('hex'), generate: o.reorder * 2 })) }));
    await kms.fleet.call('import-oem', { path: oemFile });

    const uplinkDir = path.join(o.base, 'uplink');
    const upCfg = await writeUplinkConfig({ dir: uplinkDir, boxId, broker, kmsCaFile: kms.caCert, timing: { tickSeconds: 0.3, chunkTimeoutSeconds: 2, reorderRetrySeconds: 3, ackTimeoutSeconds: 2, statusSeconds: 5 } });
    const launchUplink = (): Proc => startService('uplink', { PKS_CONFIG: upCfg, PKS_RUN_DIR: box.runDir }, box.logDir);
    let uplink = launchUplink();
    stops.push(() => uplink.stop());

    const admin = box.keystore.client('pksctl');
    const stats = async (): Promise<StatsResponse['pools']> => (await admin.call<StatsResponse>('stats')).pools;
    await waitFor('first stock over MQTT', async () => Object.values(await stats()).every((s) => s.available >= o.reorder), 180_000, 200);

    const testers = Array.from({ length: o.testers }, (_, i) => ({ cn: `campaign-t${i}`, station: `st${i}`, pools: pools.map((p) => p.pool) }));
    const api = await startTesterApi({
      dir: path.join(o.base, 'tester-api'),
      runDir: box.runDir,
      logDir: box.logDir,
      testers,
      keystoreAdmin: admin,
      vault: box.vault.client('tester-api'),
      limits: { requestsPerSecond: 10_000, burst: 10_000, newReservationsPerHour: 10_000_000, handshakesPerWindow: 100_000 },
    });
    stops.push(() => api.stop());

    // the vault as its handle started it (same config, token, user), readiness from its status verb
    const vaultUser = ensureServiceUsers() ? serviceUser('vault') : undefined;
    const vaultProbe = box.vault.client('pksctl');
    const restartVault = async (): Promise<void> => {
      box.vault.proc = startService('vault', { PKS_CONFIG: box.vault.configFile, PKS_RUN_DIR: box.runDir, SOFTHSM2_CONF: box.vault.token.conf }, box.logDir, 'vault', vaultUser);
      await waitFor('vault ready', async () => (await vaultProbe.call<{ ready: boolean }>('status')).ready, 60_000, 50);
    };
    // the uplink is up (READY on the box) once its own socket answers
    const uplinkProbe = ipcClient(socketPath('uplink', 'pksctl', box.runDir), { timeoutMs: 2_000 });
    stops.push(() => uplinkProbe.close());
    const restartUplink = async (): Promise<void> => {
      uplink = launchUplink();
      await waitFor('uplink ready', async () => (await uplinkProbe.call<{ mode: string }>('status')).mode, 60_000, 50);
    };

    return {
      base: o.base,
      boxId,
      broker,
      kms,
      box,
      api,
      pools,
      uplinkDir,
      proc: (t) => (t === 'vault' ? box.vault.proc : t === 'keystore' ? box.keystore.proc : t === 'tester-api' ? api.proc : uplink),
      async restart(t) {
        if (t === 'vault') await restartVault();
        else if (t === 'keystore') await box.keystore.restart();
        else if (t === 'tester-api') await api.restart();
        else await restartUplink();
      },
      stats,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
