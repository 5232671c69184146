// The unlock service as the plant-in-a-box, the tests and the bench run it: its server
// certificate from a box CA, its config, the process, an admin client on its pksctl socket, and
// people: a user onboarded and approved (twice for a high-privilege role), with a key pair and
// a certificate from the HSM's user CA, and an mTLS client presenting it.
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'undici';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import type { UnlockRequest } from '../../appliance/contracts/unlock.js';
import { issue, makeCa } from './pki.js';
import { freePort, startService, waitFor, type Proc } from './process.js';
import { pairGroups, prepareServiceUser } from './users.js';

const run = promisify(execFile);

export interface UnlockUserCred {
  cn: string;
  key: string;
  cert: string;
  keyFile: string;
  certFile: string;
  serial: string;
}

export interface UnlockHandle {
  proc: Proc;
  port: number;
  url: string;
  /** PEM of the CA that issued the server certificate (what a browser or client pins) */
  serverCa: string;
  serverCaFile: string;
  dir: string;
  configFile: string;
  /** the unlock service's pksctl socket */
  admin: IpcClient;
  /** onboards (approving as many times as the role needs) and certifies a user */
  user(cn: string, role: string, accessSeconds?: number): Promise<UnlockUserCred>;
  /** a keep-alive mTLS client presenting the user's certificate */
  client(u: UnlockUserCred): Client;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export const PLANT_ECU_TYPES = { bcm: { tokenKey: 'oem1' }, gateway: { tokenKey: 'oem1' } } as const;

/** A P-256 key and a CSR for CN=cn, made with openssl as a user would. */
export async function makeCsr(dir: string, cn: string): Promise<{ keyFile: string; csr: string }> {
  await mkdir(dir, { recursive: true });
  const keyFile = path.join(dir, `${cn}.key`);
  const { stdout } = await run('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-subj', `/CN=${cn}`], { timeout: 10_000 });
  return { keyFile, csr: stdout };
}

/** `separate` (default on): as root, the service runs as pks-unlock with its pair groups (scripts/plant/users.ts). */
export async function startUnlock(o: { dir: string; runDir: string; logDir: string; boxId: string; limits?: Record<string, number>; roles?: Record<string, unknown>; separate?: boolean }): Promise<UnlockHandle> {
  await mkdir(o.dir, { recursive: true });
  const pkiDir = path.join(o.dir, 'pki');
  const ca = await makeCa(pkiDir, 'box-ca');
  const server = await issue(pkiDir, 'box-ca', 'unlock-server', { cn: 'pks.local', server: true, san: ['DNS:localhost', 'IP:127.0.0.1'] });
  const port = await freePort();
  const configFile = path.join(o.dir, 'unlock.json');
  const user = prepareServiceUser('unlock', { ...(o.separate !== undefined ? { separate: o.separate } : {}), own: [o.dir], runDir: o.runDir });
  await writeFile(
    configFile,
    JSON.stringify(
      {
        boxId: o.boxId,
        listen: { host: '127.0.0.1', port },
        tls: { cert: server.cert, keyFile: server.key },
        ecuTypes: PLANT_ECU_TYPES,
        ...(o.roles ? { roles: o.roles } : {}),
        ...(o.limits ? { limits: o.limits } : {}),
        ...(user ? { ipc: { groups: pairGroups('unlock', ['uplink']) } } : {}),
      },
      null,
      2,
    ),
  );
  const serverCa = await readFile(ca.cert, 'utf8');
  const url = `https://127.0.0.1:${port}`;
  const admin = ipcClient(socketPath('unlock', 'pksctl', o.runDir), { timeoutMs: 15_000 });
  const clients: Client[] = [];
  const launch = async (): Promise<Proc> => {
    const p = startService('unlock', { PKS_CONFIG: configFile, PKS_RUN_DIR: o.runDir }, o.logDir, 'unlock', user);
    await waitFor('unlock ready', async () => {
      if (p.child.exitCode !== null) throw new Error(`unlock exited ${p.child.exitCode}`);
      return (await admin.call<{ tokens: number }>('status')) !== undefined;
    }, 30_000, 100);
    return p;
  };
  const usersDir = path.join(o.dir, 'users');
  const handle: UnlockHandle = {
    proc: await launch(),
    port,
    url,
    serverCa,
    serverCaFile: ca.cert,
    dir: o.dir,
    configFile,
    admin,
    async user(cn, role, accessSeconds = 86_400) {
      const req = await admin.call<UnlockRequest>('onboard', { cn, role, accessSeconds, as: 'plant-it-1' });
      await admin.call('approve', { id: req.id, as: 'plant-it-1' });
      if (req.approvalsNeeded > 1) await admin.call('approve', { id: req.id, as: 'plant-it-2' });
      const { keyFile, csr } = await makeCsr(usersDir, cn);
      const r = await admin.call<{ certificate: string; serial: string }>('certificate', { cn, csr, as: 'plant-it-1' });
      const certFile = path.join(usersDir, `${cn}.crt`);
      await writeFile(certFile, r.certificate);
      return { cn, key: await readFile(keyFile, 'utf8'), cert: r.certificate, keyFile, certFile, serial: r.serial };
    },
    client(u) {
      const c = new Client(url, { connect: { ca: serverCa, key: u.key, cert: u.cert, servername: 'localhost' }, keepAliveTimeout: 60_000, pipelining: 1 });
      clients.push(c);
      return c;
    },
    async restart() {
      await handle.proc.stop();
      handle.proc = await launch();
    },
    async stop() {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      await admin.close().catch(() => {});
      await handle.proc.stop();
    },
  };
  return handle;
}

/** JSON request on an mTLS client; state-changing requests carry the console's anti-forgery header. */
export async function unlockCall<T = Record<string, unknown>>(c: Client, method: 'GET' | 'POST', url: string, body?: unknown, csrf?: string): Promise<{ status: number; body: T }> {
  const r = await c.request({
    method,
    path: url,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(csrf ? { 'x-pks-csrf': csrf } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.body.text();
  return { status: r.statusCode, body: (text ? JSON.parse(text) : {}) as T };
}
