// A keystore process as the plant-in-a-box and the e2e tests run it, plus the KMS CA and the
// batch signer it trusts.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { loadSigner, type Signer } from './batch.js';
import { issue, makeCa } from './pki.js';
import { startService, waitFor, type Proc } from './process.js';
import { ensureServiceUsers, pairGroups, prepareServiceUser } from './users.js';

export interface KmsPki {
  caCert: string;
  signer: Signer;
}

/** The KMS CA (pinned by the box) and a batch-signing certificate issued by it. */
export async function makeKmsPki(dir: string): Promise<KmsPki> {
  await mkdir(dir, { recursive: true });
  const ca = await makeCa(dir, 'kms-ca');
  const s = await issue(dir, 'kms-ca', 'kms-batch-signer', { cn: 'kms-batch-signer', batchSigner: true });
  return { caCert: ca.cert, signer: loadSigner(await readFile(s.key, 'utf8'), await readFile(s.cert, 'utf8')) };
}

export interface PoolConfig {
  pool: string;
  minimum: number;
  reorder: number;
  critical?: number;
}

export interface KeystoreHandle {
  proc: Proc;
  dataDir: string;
  configFile: string;
  client(caller: string): IpcClient;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `separate` (default on; PKS_SEPARATE_USERS=0 turns it off): as root, the keystore runs as
 * pks-keystore with its pair groups and chgrp's each caller's socket (scripts/plant/users.ts).
 */
export async function startKeystore(o: { dir: string; runDir: string; logDir: string; boxId: string; kmsCa: string; pools: PoolConfig[]; checkpointEvery?: number; name?: string; separate?: boolean; quotas?: Record<string, number>; extra?: Record<string, unknown> }): Promise<KeystoreHandle> {
  await mkdir(o.dir, { recursive: true });
  const dataDir = path.join(o.dir, 'data');
  const configFile = path.join(o.dir, 'keystore.json');
  const separate = (o.separate ?? true) && ensureServiceUsers();
  await writeFile(
    configFile,
    JSON.stringify(
      {
        boxId: o.boxId,
        dataDir,
        kmsCa: o.kmsCa,
        mapSizeMb: 4096,
        pools: o.pools,
        audit: { checkpointEvery: o.checkpointEvery ?? 1000, checkpointSeconds: 5 },
        ...(o.quotas ? { quotas: o.quotas } : {}),
        ...o.extra,
        ...(separate ? { ipc: { groups: pairGroups('keystore', ['tester-api', 'uplink', 'sentinel', 'unlock', 'updater']) } } : {}),
      },
      null,
      2,
    ),
  );
  if (separate) await mkdir(dataDir, { recursive: true });
  const user = prepareServiceUser('keystore', { separate, own: [o.dir], runDir: o.runDir, reach: [path.dirname(o.kmsCa)] });
  const clients: IpcClient[] = [];
  const client = (caller: string): IpcClient => {
    const c = ipcClient(socketPath('keystore', caller, o.runDir), { timeoutMs: 15_000 });
    clients.push(c);
    return c;
  };
  const probe = client('pksctl');
  const launch = async (): Promise<Proc> => {
    const p = startService('keystore', { PKS_CONFIG: configFile, PKS_RUN_DIR: o.runDir }, o.logDir, o.name ?? 'keystore', user);
    await waitFor('keystore ready', async () => (await probe.call<{ pools: object }>('stats')).pools, 30_000, 50);
    return p;
  };
  const handle: KeystoreHandle = {
    proc: await launch(),
    dataDir,
    configFile,
    client,
    async restart() {
      await handle.proc.stop();
      handle.proc = await launch();
    },
    async stop() {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await handle.proc.stop();
    },
  };
  return handle;
}
