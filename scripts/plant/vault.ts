// A vault on a fresh SoftHSM token, as the plant-in-a-box and the e2e tests run it.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { ROOT, startService, waitFor, type Proc } from './process.js';

const run = promisify(execFile);
export const SOFTHSM_MODULE = process.env.PKCS11_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

export interface Token {
  conf: string;
  label: string;
  pin: string;
  module: string;
}

export async function makeToken(dir: string, label: string, pin = '1234-user', soPin = '5678-so'): Promise<Token> {
  await run(path.join(ROOT, 'scripts', 'softhsm-token.sh'), [dir, label, soPin, pin]);
  return { conf: path.join(dir, 'softhsm2.conf'), label, pin, module: SOFTHSM_MODULE };
}

export interface VaultHandle {
  proc: Proc;
  token: Token;
  configFile: string;
  /** a client on the given caller's socket */
  client(caller: string): IpcClient;
  stop(): Promise<void>;
}

export async function startVault(opts: { dir: string; runDir: string; logDir: string; boxId: string; token?: Token }): Promise<VaultHandle> {
  await mkdir(opts.dir, { recursive: true });
  const token = opts.token ?? (await makeToken(path.join(opts.dir, 'hsm'), `pks-${opts.boxId}`.slice(0, 32)));
  const pinFile = path.join(opts.dir, 'hsm-pin');
  await writeFile(pinFile, token.pin + '\n', { mode: 0o600 });
  const configFile = path.join(opts.dir, 'vault.json');
  await writeFile(
    configFile,
    // unlock: the user CA and the OEM's token key for the unlock service (scripts/plant/unlock.ts)
    JSON.stringify({ boxId: opts.boxId, hsm: { module: token.module, tokenLabel: token.label, pinFile, softhsm2Conf: token.conf }, unlock: { tokenKeys: ['oem1'] } }, null, 2),
  );
  const proc = startService('vault', { PKS_CONFIG: configFile, PKS_RUN_DIR: opts.runDir, SOFTHSM2_CONF: token.conf }, opts.logDir);
  const clients: IpcClient[] = [];
  const client = (caller: string): IpcClient => {
    const c = ipcClient(socketPath('vault', caller, opts.runDir), { timeoutMs: 10_000 });
    clients.push(c);
    return c;
  };
  const probe = client('pksctl');
  await waitFor('vault ready', async () => (await probe.call<{ ready: boolean }>('status')).ready, 30_000);
  return {
    proc,
    token,
    configFile,
    client,
    async stop() {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await proc.stop();
    },
  };
}
