// Shared rig of the tester-api tests: a development PKI (box CA for the server certificate,
// tester CA and a foreign CA for the clients), the keystore stub, the app on an ephemeral
// loopback port, and undici clients presenting a tester's certificate.
import { createPrivateKey, sign as nodeSign } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'undici';
import * as x509 from '@peculiar/x509';
import { validateConfig } from '../../appliance/config.js';
import { silentLogger } from '../../appliance/log.js';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { createTesterApi, type Caller, type TesterApi } from '../../services/tester-api/app.js';
import { testerApiSchema, type TesterApiConfig } from '../../services/tester-api/config.js';
import { signCertificate, newSerial } from '../../appliance/x509.js';
import { issue, makeCa } from '../helpers/pki.js';
import { startKeystoreStub, type KeystoreStub } from '../helpers/keystore-stub.js';

export interface Cred {
  key: string;
  cert: string;
}

export interface Pki {
  dir: string;
  boxCa: string;
  testerCa: string;
  testerCaFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  server: Cred;
  /** by tester name; 'foreign' comes from another CA, 'stale' has an expired certificate */
  testers: Record<string, Cred>;
}

export const POOL_A = 'oem1.bcm.key4';
export const POOL_B = 'oem1.bcm.key5';
export const POOL_C = 'oem1.gw.key4';
export const TESTER_NAMES = ['alice', 'bob', 'revoked', 'lapsed', 'stranger', 'busy', 'greedy', 'ecu-station'] as const;

let pkiPromise: Promise<Pki> | undefined;

/** The PKI, made once per process (all tester-api test files share it). */
export function pki(): Promise<Pki> {
  return (pkiPromise ??= makePki());
}

async function makePki(): Promise<Pki> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-tapi-pki-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  const [box, testers] = await Promise.all([makeCa(dir, 'box'), makeCa(dir, 'testers'), makeCa(dir, 'other')]);
  const server = await issue(dir, 'box', 'server', { cn: 'pks.local', server: true, san: ['DNS:localhost', 'IP:127.0.0.1'] });
  const kp = await Promise.all([
    ...TESTER_NAMES.map((n) => issue(dir, 'testers', n, { cn: n, client: true })),
    issue(dir, 'other', 'foreign', { cn: 'alice', client: true }),
  ]);
  const read = async (p: { key: string; cert: string }): Promise<Cred> => ({ key: await readFile(p.key, 'utf8'), cert: await readFile(p.cert, 'utf8') });
  const creds: Record<string, Cred> = {};
  for (const [i, n] of [...TESTER_NAMES, 'foreign'].entries()) creds[n] = await read(kp[i]!);
  // an expired tester certificate, which pki.sh cannot make: signed here with the tester CA key
  const caKey = createPrivateKey(await readFile(testers.key, 'utf8'));
  const ca = new x509.X509Certificate(await readFile(testers.cert, 'utf8'));
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify'])) as CryptoKeyPair;
  const stale = await signCertificate(
    {
      serial: newSerial(),
      subject: 'CN=alice',
      issuer: ca.subjectName,
      spki: Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey)),
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
      extensions: [new x509.BasicConstraintsExtension(false, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
    },
    async (tbs) => nodeSign('sha256', tbs, { key: caKey, dsaEncoding: 'ieee-p1363' }),
  );
  const pkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
  creds.stale = { cert: stale.toString('pem'), key: `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n` };
  return {
    dir,
    boxCa: await readFile(box.cert, 'utf8'),
    testerCa: await readFile(testers.cert, 'utf8'),
    testerCaFile: testers.cert,
    serverCertFile: server.cert,
    serverKeyFile: server.key,
    server: await read(server),
    testers: creds,
  };
}

export interface Rig {
  pki: Pki;
  runDir: string;
  stub: KeystoreStub;
  api: TesterApi;
  port: number;
  keystore: IpcClient;
  /** undici client (keep-alive) presenting the tester's certificate */
  client(tester: string): Client;
  close(): Promise<void>;
}

export interface RigOptions {
  limits?: Partial<TesterApiConfig['limits']>;
  http?: Partial<TesterApiConfig['http']>;
  vault?: Caller;
  runDir?: string;
}

const day = 86_400_000;

export async function startRig(opts: RigOptions = {}): Promise<Rig> {
  const p = await pki();
  const runDir = opts.runDir ?? (await mkdtemp(path.join(os.tmpdir(), 'pks-tapi-run-')));
  const stub = await startKeystoreStub(runDir, { pools: [POOL_A, POOL_B, POOL_C] });
  const future = new Date(Date.now() + 30 * day).toISOString();
  const reg = (cn: string, pools: string[], extra: Partial<{ expiresAt: string; revoked: boolean }> = {}): void => {
    stub.testers.set(cn, { cn, station: `st-${cn}`, pools, expiresAt: extra.expiresAt ?? future, revoked: extra.revoked ?? false });
  };
  reg('alice', [POOL_A, POOL_B]);
  reg('bob', [POOL_C]);
  reg('revoked', [POOL_A], { revoked: true });
  reg('lapsed', [POOL_A], { expiresAt: new Date(Date.now() - day).toISOString() });
  reg('busy', [POOL_A]);
  reg('greedy', [POOL_A]);
  reg('ecu-station', [POOL_A]);
  stub.testers.set('ecu-station', { ...stub.testers.get('ecu-station')!, certProfiles: ['oem1.bcm'] });
  // 'stranger' has a valid certificate but is not in the registry

  const config = validateConfig<TesterApiConfig>(testerApiSchema, {
    listen: { host: '127.0.0.1', port: 0 },
    tls: { cert: p.serverCertFile, keyFile: p.serverKeyFile, ca: p.testerCaFile },
    limits: { handshakesPerWindow: 10_000, ...opts.limits },
    ...(opts.http ? { http: opts.http } : {}),
  });
  const keystore = ipcClient(socketPath('keystore', 'tester-api', runDir), { timeoutMs: 2000 });
  const noVault: Caller = {
    call: async () => {
      throw new Error('no vault in this rig');
    },
  };
  const api = await createTesterApi({
    config,
    tls: { cert: p.server.cert, key: p.server.key, ca: p.testerCa },
    keystore,
    vault: opts.vault ?? noVault,
    log: silentLogger,
  });
  const { port } = await api.listen();
  const clients: Client[] = [];
  return {
    pki: p,
    runDir,
    stub,
    api,
    port,
    keystore,
    client(tester) {
      const cred = p.testers[tester]!;
      const c = new Client(`https://localhost:${port}`, { connect: { ca: p.boxCa, cert: cred.cert, key: cred.key }, keepAliveTimeout: 10_000, pipelining: 1 });
      clients.push(c);
      return c;
    },
    async close() {
      await Promise.all(clients.map((c) => c.destroy().catch(() => {})));
      await api.close();
      await keystore.close();
      await stub.close();
      if (!opts.runDir) await rm(runDir, { recursive: true, force: true });
    },
  };
}

export interface Res {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
  text: string;
}

/** One request; the body is sent as JSON unless it is a string (sent as is). */
export async function call(c: Client, method: 'GET' | 'POST', url: string, body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  const res = await c.request({
    method,
    path: url,
    headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.body.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.statusCode, headers: res.headers, body: parsed, text };
}

export const uid = (n: number): string => n.toString(16).padStart(30, '0');
