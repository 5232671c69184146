// The services the HTTP scenarios run: the tester API as a process on a free loopback port
// with its certificates, and the PostgreSQL keystore baseline as a process. Both are started
// from their TypeScript sources like the plant-in-a-box does.
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Client } from 'undici';
import { issue, makeCa } from '../../scripts/plant/pki.js';
import { startEntry, startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import type { Cred } from './flow.js';

export const TESTER = 'bench-tester';

export interface Certs {
  serverCert: string;
  serverKey: string;
  testerCaFile: string;
  tester: Cred;
}

export async function makeCerts(dir: string): Promise<Certs> {
  await mkdir(dir, { recursive: true });
  const [box] = await Promise.all([makeCa(dir, 'box'), makeCa(dir, 'testers')]);
  const [server, tester] = await Promise.all([
    issue(dir, 'box', 'server', { cn: 'pks.local', server: true, san: ['DNS:localhost', 'IP:127.0.0.1'] }),
    issue(dir, 'testers', TESTER, { cn: TESTER, client: true }),
  ]);
  return {
    serverCert: server.cert,
    serverKey: server.key,
    testerCaFile: path.join(dir, 'testers.crt'),
    tester: { ca: await readFile(box.cert, 'utf8'), cert: await readFile(tester.cert, 'utf8'), key: await readFile(tester.key, 'utf8') },
  };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export interface TesterApiHandle {
  port: number;
  proc: Proc;
}

/** The real tester API, limits opened up so that 64 stations on one certificate are not throttled. */
export async function startTesterApi(o: { dir: string; runDir: string; logDir: string; certs: Certs; name: string }): Promise<TesterApiHandle> {
  await mkdir(o.dir, { recursive: true });
  const port = await freePort();
  const configFile = path.join(o.dir, `${o.name}.json`);
  await writeFile(
    configFile,
    JSON.stringify({
      listen: { host: '127.0.0.1', port },
      tls: { cert: o.certs.serverCert, keyFile: o.certs.serverKey, ca: o.certs.testerCaFile },
      limits: { requestsPerSecond: 100_000, burst: 100_000, newReservationsPerHour: 10_000_000, handshakesPerWindow: 100_000 },
      ipc: { timeoutMs: 10_000 },
    }),
  );
  const proc = startService('tester-api', { PKS_CONFIG: configFile, PKS_RUN_DIR: o.runDir }, o.logDir, o.name);
  try {
    const c = new Client(`https://localhost:${port}`, { connect: { ca: o.certs.tester.ca, cert: o.certs.tester.cert, key: o.certs.tester.key } });
    try {
      await waitFor(
        'tester-api ready',
        async () => {
          if (proc.child.exitCode !== null) throw new Error(`tester-api exited: ${(await readFile(proc.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ').slice(0, 600)}`);
          const r = await c.request({ method: 'GET', path: '/v1/health' });
          await r.body.text();
          return r.statusCode === 200;
        },
        30_000,
        100,
      );
    } finally {
      await c.close();
    }
  } catch (e) {
    await proc.stop();
    throw e;
  }
  return { port, proc };
}

/** The PostgreSQL keystore baseline on the keystore's sockets in runDir. */
export async function startKeystorePg(o: { dir: string; runDir: string; logDir: string; boxId: string; kmsCa: string; pools: string[]; pg: { host: string; port: number; poolSize?: number } }): Promise<Proc> {
  await mkdir(o.dir, { recursive: true });
  const configFile = path.join(o.dir, 'keystore-pg.json');
  await writeFile(configFile, JSON.stringify({ boxId: o.boxId, kmsCa: o.kmsCa, pools: o.pools, pg: { host: o.pg.host, port: o.pg.port, poolSize: o.pg.poolSize ?? 32 } }));
  const proc = startEntry(path.join(path.dirname(fileURLToPath(import.meta.url)), 'keystore-pg', 'main.ts'), { PKS_CONFIG: configFile, PKS_RUN_DIR: o.runDir }, o.logDir, 'keystore-pg');
  const probe = ipcClient(socketPath('keystore', 'pksctl', o.runDir), { timeoutMs: 5000 });
  try {
    await waitFor(
      'keystore-pg ready',
      async () => {
        if (proc.child.exitCode !== null) throw new Error(`keystore-pg exited: ${(await readFile(proc.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ').slice(0, 600)}`);
        return (await probe.call<{ pools: object }>('stats')).pools;
      },
      30_000,
      100,
    );
  } catch (e) {
    await proc.stop();
    throw e;
  } finally {
    await probe.close();
  }
  return proc;
}

/**
 * The two services that are not on the issuance path, running as on the box while the bench
 * loads the others, so that the memory figure covers all five: the uplink connected to a real
 * broker (no KMS answers it: it idles as on a quiet link) and the sentinel running its checks
 * (its SMTP port is closed: mails would queue).
 */
export async function startQuietServices(o: { base: string; runDir: string; logDir: string; boxId: string; keystoreDataDir: string; kmsCaFile: string }): Promise<{ procs: Proc[]; stop(): Promise<void> }> {
  const { startBroker } = await import('../../scripts/plant/broker.js');
  const { writePlantSentinelConfig } = await import('../../services/sentinel/plant-config.js');
  const { generateKeyPairSync } = await import('node:crypto');
  const broker = await startBroker();
  const procs: Proc[] = [];
  try {
    const upDir = path.join(o.base, 'uplink');
    await mkdir(upDir, { recursive: true });
    const id = await broker.clientCert(o.boxId);
    const opsPub = path.join(upDir, 'ops.pub');
    await writeFile(opsPub, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }));
    const upCfg = path.join(upDir, 'uplink.json');
    await writeFile(
      upCfg,
      JSON.stringify({
        boxId: o.boxId,
        stateDir: path.join(upDir, 'state'),
        mqtt: { host: '127.0.0.1', port: broker.port, caFile: broker.caCert, certFile: id.cert, keyFile: id.key, sessionExpirySeconds: 86_400, keepaliveSeconds: 30, reconnectSeconds: 2 },
        opsPublicKeyFile: opsPub,
        kmsCaFile: o.kmsCaFile,
        schedule: { mode: 'always', cron: '0 * * * *', windowSeconds: 60 },
        timing: { tickSeconds: 5, chunkTimeoutSeconds: 30, reorderRetrySeconds: 600, ackTimeoutSeconds: 30, statusSeconds: 30 },
      }),
    );
    procs.push(startService('uplink', { PKS_CONFIG: upCfg, PKS_RUN_DIR: o.runDir }, o.logDir));
    const sentinelCfg = await writePlantSentinelConfig({ dir: path.join(o.base, 'sentinel'), boxId: o.boxId, smtpPort: await freePort(), keystoreDataDir: o.keystoreDataDir, keystoreMapSizeMb: 4096, everySeconds: 5, services: ['vault', 'keystore'] });
    procs.push(startService('sentinel', { PKS_CONFIG: sentinelCfg, PKS_RUN_DIR: o.runDir }, o.logDir));
    await waitFor('uplink and sentinel running', async () => procs.every((p) => p.child.exitCode === null) && (await new Promise((r) => setTimeout(r, 3000, true))), 10_000);
    for (const p of procs) if (p.child.exitCode !== null) throw new Error(`${p.name} exited: ${(await readFile(p.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-3).join(' | ').slice(0, 600)}`);
  } catch (e) {
    for (const p of procs) await p.stop();
    await broker.stop();
    throw e;
  }
  return {
    procs,
    async stop() {
      for (const p of procs) await p.stop();
      await broker.stop();
    },
  };
}
