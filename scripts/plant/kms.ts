// The reference KMS (scripts/kms/main.ts) as a real process for tests: its own KMS CA and
// batch signer (scripts/pki.sh), a `kms` client certificate from the broker's CA, an LMDB
// state dir and the pks-fleet socket. restart() keeps the state; stop() removes nothing
// (the caller owns `dir`).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { startProcess, waitFor, ROOT, type Proc } from './process.js';
import type { TestBroker } from './broker.js';
import { issue, makeCa } from './pki.js';

export interface TestKms {
  dir: string;
  /** the KMS CA certificate boxes pin (batch signer issuer) */
  caCert: string;
  signer: { key: string; cert: string };
  fleet: IpcClient;
  socket: string;
  configFile: string;
  proc(): Proc;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export async function startKms(broker: TestBroker, dir: string): Promise<TestKms> {
  const pkiDir = path.join(dir, 'pki');
  await mkdir(pkiDir, { recursive: true, mode: 0o700 });
  const ca = await makeCa(pkiDir, 'kms-ca');
  const signer = await issue(pkiDir, 'kms-ca', 'batch-signer', { cn: 'kms-batch-signer' });
  const mqttId = await broker.clientCert('kms');
  const runDir = path.join(dir, 'run');
  const cfg = {
    stateDir: path.join(dir, 'state'),
    runDir,
    mqtt: { host: '127.0.0.1', port: broker.port, caFile: broker.caCert, certFile: mqttId.cert, keyFile: mqttId.key, keepaliveSeconds: 5 },
    signer: { certFile: signer.cert, keyFile: signer.key },
  };
  const configFile = path.join(dir, 'kms.json');
  await writeFile(configFile, JSON.stringify(cfg, null, 2));
  const socket = path.join(runDir, 'fleet.sock');
  const fleet = ipcClient(socket, { timeoutMs: 20_000 });
  let proc: Proc;
  const launch = async (): Promise<void> => {
    proc = startProcess('kms', process.execPath, ['--import', 'tsx', path.join(ROOT, 'scripts', 'kms', 'main.ts')], {
      env: { PKS_CONFIG: configFile, PKS_LOG_LEVEL: 'debug' },
      logDir: dir,
    });
    await waitFor('kms ready', async () => Array.isArray((await fleet.call<{ boxes: unknown[] }>('boxes')).boxes), 20_000, 50);
  };
  await launch();
  return {
    dir,
    caCert: ca.cert,
    signer,
    fleet,
    socket,
    configFile,
    proc: () => proc,
    async stop() {
      await proc.stop();
    },
    async restart() {
      await proc.stop();
      await launch();
    },
  };
}
