// The reference KMS (scripts/kms/main.ts) as a real process for tests: its own KMS CA
// (scripts/pki.sh), its batch signer key in its own SoftHSM token (scripts/softhsm-token.sh;
// the KMS generates the key there once and issues its certificate with the KMS CA key) or,
// with signer: 'keyfile', a key file; a `kms` client certificate from the broker's CA, which
// it also uses to answer rotate-cert CSRs (clientCa); an LMDB state dir and the pks-fleet
// socket. restart() keeps the state and the token; stop() removes nothing (the caller owns `dir`).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { startProcess, waitFor, ROOT, type Proc } from './process.js';
import { makeToken } from './vault.js';
import type { TestBroker } from './broker.js';
import { issue, makeCa } from './pki.js';

export interface TestKms {
  dir: string;
  /** the KMS CA certificate boxes pin (batch signer issuer) */
  caCert: string;
  /** which batch signer the KMS process uses */
  signerKind: 'hsm' | 'keyfile';
  /**
   * A key-file batch signer from the same KMS CA: what the KMS uses with signer 'keyfile'; with
   * 'hsm' only for tests that play a second KMS (its batches verify at the boxes just the same)
   */
  signer: { key: string; cert: string };
  /** the certificate of the HSM signer, once the KMS has issued it (signer 'hsm') */
  hsmSignerCert: string;
  fleet: IpcClient;
  socket: string;
  configFile: string;
  proc(): Proc;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export interface KmsOptions {
  /** batch signer kind (default 'hsm') */
  signer?: 'hsm' | 'keyfile';
  /** let the KMS issue box client certificates with the broker's dev CA (default true) */
  clientCa?: boolean;
  /** issue 12: the KMS config's `attest` section (stock only for attested boxes) */
  attest?: Record<string, unknown>;
  /** issue 16 §3: the KMS writes the client CA's CRL into the broker's dir and SIGHUPs it */
  crl?: boolean;
}

export async function startKms(broker: TestBroker, dir: string, o: KmsOptions = {}): Promise<TestKms> {
  const pkiDir = path.join(dir, 'pki');
  await mkdir(pkiDir, { recursive: true, mode: 0o700 });
  const ca = await makeCa(pkiDir, 'kms-ca');
  const signer = await issue(pkiDir, 'kms-ca', 'batch-signer', { cn: 'kms-batch-signer', batchSigner: true });
  const mqttId = await broker.clientCert('kms');
  const runDir = path.join(dir, 'run');
  const signerKind = o.signer ?? 'hsm';
  const hsmSignerCert = path.join(pkiDir, 'batch-signer-hsm.crt');
  let signerCfg: Record<string, unknown> = { certFile: signer.cert, keyFile: signer.key };
  if (signerKind === 'hsm') {
    const token = await makeToken(path.join(dir, 'hsm'), 'pks-kms');
    const pinFile = path.join(dir, 'hsm-pin');
    await writeFile(pinFile, token.pin + '\n', { mode: 0o600 });
    signerCfg = { certFile: hsmSignerCert, hsm: { module: token.module, tokenLabel: token.label, pinFile, softhsm2Conf: token.conf }, ca: { certFile: ca.cert, keyFile: ca.key } };
  }
  const cfg = {
    stateDir: path.join(dir, 'state'),
    runDir,
    mqtt: { host: '127.0.0.1', port: broker.port, caFile: broker.caCert, certFile: mqttId.cert, keyFile: mqttId.key, keepaliveSeconds: 5 },
    signer: signerCfg,
    // the dev broker trusts client certificates of its own CA (scripts/plant/broker.ts)
    ...(o.clientCa === false ? {} : { clientCa: { certFile: broker.caCert, keyFile: broker.caCert.replace(/\.crt$/, '.key') } }),
    ...(o.attest ? { attest: o.attest } : {}),
    ...(o.crl ? { crl: { file: broker.crlFile, hupPidFile: broker.pidFile } } : {}),
  };
  const configFile = path.join(dir, 'kms.json');
  await writeFile(configFile, JSON.stringify(cfg, null, 2));
  const socket = path.join(runDir, 'fleet.sock');
  const fleet = ipcClient(socket, { timeoutMs: 20_000 });
  let proc: Proc;
  const launch = async (): Promise<void> => {
    // $PKS_NODE_ARGS as for the services (startService): extra node flags, e.g. a test's clock warp
    const extra = (process.env.PKS_NODE_ARGS ?? '').split(' ').filter(Boolean);
    proc = startProcess('kms', process.execPath, [...extra, '--import', 'tsx', path.join(ROOT, 'scripts', 'kms', 'main.ts')], {
      env: { PKS_CONFIG: configFile, PKS_LOG_LEVEL: 'debug' },
      logDir: dir,
    });
    await waitFor('kms ready', async () => Array.isArray((await fleet.call<{ boxes: unknown[] }>('boxes')).boxes), 60_000, 50);
  };
  await launch();
  return {
    dir,
    caCert: ca.cert,
    signerKind,
    signer,
    hsmSignerCert,
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
