// A vault on a fresh SoftHSM token, as the plant-in-a-box and the e2e tests run it.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import type { EcuProfile } from '../../services/vault/signed-structures.js';
import { ROOT, startService, waitFor, type Proc } from './process.js';
import { ensureServiceUsers, giveTo, openPath, pairGroups, serviceUser, type ServiceUser } from './users.js';

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
  /** with `ecuCa`: the ECU issuing CA certificate the vault issues under (self-signed, dev) */
  ecuCaFile?: string;
  /** a client on the given caller's socket */
  client(caller: string): IpcClient;
  stop(): Promise<void>;
}

/** The callers the vault has a socket for on the box, each with its pair group. */
export const VAULT_CALLERS = ['keystore', 'tester-api', 'uplink', 'sentinel', 'unlock', 'updater'] as const;

/**
 * `separate` (default on; PKS_SEPARATE_USERS=0 turns it off): as root, the vault runs as pks-vault with its supplementary pair groups and
 * chgrp's each caller's socket to pks-vault-<caller> (scripts/plant/users.ts), as on the box.
 */
export async function startVault(opts: {
  dir: string;
  runDir: string;
  logDir: string;
  boxId: string;
  token?: Token;
  /** ECU certificate profiles by name (`<oem>.<ecu type>`); the CA certificate is made here */
  ecuCa?: { profiles: Record<string, EcuProfile>; subject?: string };
  separate?: boolean;
  /** issue 12: the application gate's config (services/vault/config.ts `gate`); the record goes into `dir` */
  gate?: Record<string, unknown>;
  /** wait until the vault is ready (HSM open); default true */
  waitReady?: boolean;
}): Promise<VaultHandle> {
  await mkdir(opts.dir, { recursive: true });
  const user: ServiceUser | null = (opts.separate ?? true) && ensureServiceUsers() ? serviceUser('vault') : null;
  const token = opts.token ?? (await makeToken(path.join(opts.dir, 'hsm'), `pks-${opts.boxId}`.slice(0, 32)));
  const pinFile = path.join(opts.dir, 'hsm-pin');
  await writeFile(pinFile, token.pin + '\n', { mode: 0o600 });
  const configFile = path.join(opts.dir, 'vault.json');
  const ecuCaFile = path.join(opts.dir, 'ecu-ca.crt');
  await writeFile(
    configFile,
    JSON.stringify(
      {
        boxId: opts.boxId,
        hsm: { module: token.module, tokenLabel: token.label, pinFile, softhsm2Conf: token.conf },
        ...(opts.ecuCa ? { ecuCa: { cert: ecuCaFile, subject: opts.ecuCa.subject ?? 'CN=Plant ECU issuing CA,O=OEM1', profiles: opts.ecuCa.profiles } } : {}),
        // unlock: the user CA and the OEM's token key for the unlock service (scripts/plant/unlock.ts)
        unlock: { tokenKeys: ['oem1'] },
        ...(user ? { ipc: { groups: pairGroups('vault', VAULT_CALLERS) } } : {}),
        ...(opts.gate ? { gate: { recordFile: path.join(opts.dir, 'gate-record.json'), ...opts.gate } } : {}),
      },
      null,
      2,
    ),
  );
  if (user) {
    // its state (token, PIN, config) is its own, its runtime dir too, as the unit's dirs are
    const own = path.join(opts.runDir, 'vault');
    await mkdir(own, { recursive: true });
    giveTo(user, opts.dir, own, ...(opts.token ? [path.dirname(opts.token.conf)] : []));
    openPath(opts.dir, '/');
    openPath(opts.runDir, '/');
  }
  const proc = startService('vault', { PKS_CONFIG: configFile, PKS_RUN_DIR: opts.runDir, SOFTHSM2_CONF: token.conf }, opts.logDir, 'vault', user ?? undefined);
  const clients: IpcClient[] = [];
  const client = (caller: string): IpcClient => {
    const c = ipcClient(socketPath('vault', caller, opts.runDir), { timeoutMs: 10_000 });
    clients.push(c);
    return c;
  };
  const probe = client('pksctl');
  if (opts.waitReady ?? true) await waitFor('vault ready', async () => (await probe.call<{ ready: boolean }>('status')).ready, 30_000);
  // plant IT's step: the ECU CA certificate over the HSM key (production: one the OEM issued)
  if (opts.ecuCa) await writeFile(ecuCaFile, (await probe.call<{ certificate: string }>('ecu-ca-certificate', { days: 5 * 365 })).certificate);
  return {
    proc,
    token,
    configFile,
    ...(opts.ecuCa ? { ecuCaFile } : {}),
    client,
    async stop() {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await proc.stop();
    },
  };
}
