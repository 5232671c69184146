// A keystore process as the plant-in-a-box and the e2e tests run it, plus the KMS CA and the
// batch signer it trusts.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { loadSigner, type Signer } from './batch.js';
import { issue, makeCa } from './pki.js';
import { startService, waitFor, type Proc } from './process.js';

export interface KmsPki {
  caCert: string;
  signer: Signer;
}

/** The KMS CA (pinned by the box) and a batch-signing certificate issued by it. */
export async function makeKmsPki(dir: string): Promise<KmsPki> {
  await mkdir(dir, { recursive: true });
  const ca = await makeCa(dir, 'kms-ca');
  const s = await issue(dir, 'kms-ca', 'kms-batch-signer', { cn: 'kms-batch-signer' });
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

export async function startKeystore(o: { dir: string; runDir: string; logDir: string; boxId: string; kmsCa: string; pools: PoolConfig[]; checkpointEvery?: number; name?: string; quotas?: Record<string, number> }): Promise<KeystoreHandle> {
  await mkdir(o.dir, { recursive: true });
  const dataDir = path.join(o.dir, 'data');
  const configFile = path.join(o.dir, 'keystore.json');
  await writeFile(
    configFile,
    JSON.stringify({ boxId: o.boxId, dataDir, kmsCa: o.kmsCa, mapSizeMb: 4096, pools: o.pools, audit: { checkpointEvery: o.checkpointEvery ?? 1000, checkpointSeconds: 5 }, ...(o.quotas ? { quotas: o.quotas } : {}) }, null, 2),
  );
  const clients: IpcClient[] = [];
  const client = (caller: string): IpcClient => {
    const c = ipcClient(socketPath('keystore', caller, o.runDir), { timeoutMs: 15_000 });
    clients.push(c);
    return c;
  };
  const probe = client('pksctl');
  const launch = async (): Promise<Proc> => {
    const p = startService('keystore', { PKS_CONFIG: configFile, PKS_RUN_DIR: o.runDir }, o.logDir, o.name ?? 'keystore');
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
