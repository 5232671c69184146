// The tester API as the plant-in-a-box and the e2e tests run it: its TLS PKI (box CA for the
// server certificate, tester CA for the testers), the testers registered in the keystore, and
// mTLS clients for them.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Client } from 'undici';
import type { IpcClient } from '../../appliance/ipc.js';
import { issue, makeCa } from './pki.js';
import { freePort, startService, waitFor, type Proc } from './process.js';
import { pairGroups, prepareServiceUser } from './users.js';

export interface TesterCred {
  cn: string;
  key: string;
  cert: string;
}

export interface TesterApiHandle {
  proc: Proc;
  port: number;
  url: string;
  boxCa: string;
  testers: TesterCred[];
  /** a keep-alive mTLS client (one connection) presenting this tester's certificate */
  client(t: TesterCred): Client;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startTesterApi(o: {
  dir: string;
  runDir: string;
  logDir: string;
  testers: { cn: string; station: string; pools: string[] }[];
  /** keystore client as pksctl, to register the testers */
  keystoreAdmin: IpcClient;
  /** vault client as tester-api (the tester API signs nothing: ECU certificates go through the keystore) */
  vault?: IpcClient;
  limits?: Record<string, number>;
  /** default on: as root, run as pks-tester-api with its pair groups (scripts/plant/users.ts) */
  separate?: boolean;
  /** the OpenMetrics endpoint's port (issue 16 §4) */
  metricsPort?: number;
  /** issue 16 §2: another tester API's PKI dir, so the boxes of a cluster share box and tester CA */
  pkiDir?: string;
}): Promise<TesterApiHandle> {
  await mkdir(o.dir, { recursive: true });
  const pkiDir = o.pkiDir ?? path.join(o.dir, 'pki');
  await makeCa(pkiDir, 'box-ca');
  const testerCa = await makeCa(pkiDir, 'tester-ca');
  const server = await issue(pkiDir, 'box-ca', 'server', { cn: 'pks.local', server: true, san: ['DNS:localhost', 'IP:127.0.0.1'] });
  const testers: TesterCred[] = [];
  for (const t of o.testers) {
    const c = await issue(pkiDir, 'tester-ca', t.cn, { cn: t.cn, client: true });
    testers.push({ cn: t.cn, key: await readFile(c.key, 'utf8'), cert: await readFile(c.cert, 'utf8') });
    await o.keystoreAdmin.call('tester-put', { cn: t.cn, station: t.station, pools: t.pools, expiresAt: new Date(Date.now() + 30 * 86_400_000).toISOString(), revoked: false });
  }
  const port = await freePort();
  const configFile = path.join(o.dir, 'tester-api.json');
  const user = prepareServiceUser('tester-api', { ...(o.separate !== undefined ? { separate: o.separate } : {}), own: [o.dir], runDir: o.runDir });
  await writeFile(
    configFile,
    JSON.stringify(
      {
        listen: { host: '127.0.0.1', port },
        tls: { cert: server.cert, keyFile: server.key, ca: testerCa.cert },
        ...(o.limits ? { limits: o.limits } : {}),
        ...(user ? { ipc: { timeoutMs: 5000, groups: pairGroups('tester-api', ['sentinel']) } } : {}),
        ...(o.metricsPort ? { metrics: { host: '127.0.0.1', port: o.metricsPort } } : {}),
      },
      null,
      2,
    ),
  );
  const boxCa = await readFile(path.join(pkiDir, 'box-ca.crt'), 'utf8');
  const url = `https://127.0.0.1:${port}`;
  const clients: Client[] = [];
  const client = (t: TesterCred): Client => {
    const c = new Client(url, { connect: { ca: boxCa, key: t.key, cert: t.cert, servername: 'localhost' }, keepAliveTimeout: 60_000, pipelining: 1 });
    clients.push(c);
    return c;
  };
  const launch = async (): Promise<Proc> => {
    const p = startService('tester-api', { PKS_CONFIG: configFile, PKS_RUN_DIR: o.runDir }, o.logDir, 'tester-api', user);
    const probe = new Client(url, { connect: { ca: boxCa, key: testers[0]!.key, cert: testers[0]!.cert, servername: 'localhost' } });
    try {
      await waitFor('tester-api ready', async () => {
        if (p.child.exitCode !== null) throw new Error(`tester-api exited ${p.child.exitCode}`);
        const r = await probe.request({ method: 'GET', path: '/v1/health' });
        const body = (await r.body.json()) as { ready?: boolean };
        return r.statusCode === 200 && body.ready;
      }, 30_000, 100);
    } finally {
      await probe.close();
    }
    return p;
  };
  const handle: TesterApiHandle = {
    proc: await launch(),
    port,
    url,
    boxCa,
    testers,
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
