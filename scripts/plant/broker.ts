// A real mosquitto for tests, through scripts/broker.sh: its own temp dir, a dev CA made in
// it (DIR/pki), mutual TLS on a loopback port, the ACLs and persistence of the dev stack.
// Always call stop() (it also removes a temp dir made here), e.g. in uvu's `after` hook.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { issue, makeCa, type KeyPair } from './pki.js';

const run = promisify(execFile);
const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/broker.sh');

export interface TestBroker {
  /** TLS port on 127.0.0.1; the broker certificate is valid for `localhost` and 127.0.0.1 */
  port: number;
  /** broker directory: mosquitto.conf, acl, mosquitto.log, mosquitto.db, pki/ */
  dir: string;
  /** the dev CA certificate clients must trust */
  caCert: string;
  /** a client certificate (clientAuth) from the dev CA with this CN, made once per CN */
  clientCert(cn: string): Promise<KeyPair>;
  /** stops mosquitto (SIGTERM, so it saves its database); removes dir if it was made here */
  stop(): Promise<void>;
  /** stop + start on the same port and dir: sessions and queued messages come back */
  restart(): Promise<void>;
  /** issue 16 §3: the CRL file mosquitto reads (`crlfile`) and its pid file (SIGHUP reloads it) */
  crlFile: string;
  pidFile: string;
  /** installs a CRL (checked against the dev CA) and has the broker reload it: broker.sh crl */
  installCrl(file: string): Promise<void>;
}

async function broker(verb: 'start' | 'stop' | 'crl', dir: string, env: NodeJS.ProcessEnv, extra: string[] = []): Promise<string> {
  try {
    const { stdout } = await run(script, [verb, dir, ...extra], { env: { ...process.env, ...env }, timeout: 30_000 });
    return stdout;
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    throw new Error(`broker.sh ${verb} failed (exit ${e.code ?? '?'}): ${(e.stderr ?? '').trim()}`);
  }
}

function portFrom(stdout: string): number {
  const m = /^BROKER_PORT=(\d+)$/m.exec(stdout);
  if (!m) throw new Error(`broker.sh start printed no BROKER_PORT: ${stdout.trim()}`);
  return Number(m[1]);
}

export async function startBroker(opts: { dir?: string } = {}): Promise<TestBroker> {
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'pks-broker-')));
  const pkiDir = path.join(dir, 'pki');
  try {
    await mkdir(pkiDir, { recursive: true, mode: 0o700 });
    const ca = await makeCa(pkiDir, 'ca');
    const env = { BROKER_CA: ca.cert };
    let port = portFrom(await broker('start', dir, env));

    const certs = new Map<string, Promise<KeyPair>>();
    let stopped = false;
    // mosquitto runs in its own session (setsid): if this process dies without stop(), end it anyway
    const onExit = (): void => {
      if (stopped) return;
      try {
        process.kill(Number(readFileSync(path.join(dir, 'mosquitto.pid'), 'utf8').trim()), 'SIGTERM');
      } catch {
        /* already gone */
      }
    };
    process.once('exit', onExit);
    return {
      get port() {
        return port;
      },
      dir,
      caCert: ca.cert,
      crlFile: path.join(dir, 'crl.pem'),
      pidFile: path.join(dir, 'mosquitto.pid'),
      async installCrl(file: string): Promise<void> {
        await broker('crl', dir, {}, [file]);
      },
      clientCert(cn: string): Promise<KeyPair> {
        let made = certs.get(cn);
        if (!made) {
          // file names follow the CN; pki.sh validates the CN itself
          const name = `client-${cn.replace(/[^A-Za-z0-9._-]/g, '_')}`;
          made = issue(pkiDir, 'ca', name, { cn, client: true });
          certs.set(cn, made);
          made.catch(() => certs.delete(cn));
        }
        return made;
      },
      async stop(): Promise<void> {
        if (stopped) return;
        stopped = true;
        process.removeListener('exit', onExit);
        await broker('stop', dir, {});
        if (ownDir) await rm(dir, { recursive: true, force: true });
      },
      async restart(): Promise<void> {
        if (stopped) throw new Error('broker was stopped');
        await broker('stop', dir, {});
        port = portFrom(await broker('start', dir, { ...env, BROKER_PORT: String(port) }));
      },
    };
  } catch (err) {
    await broker('stop', dir, {}).catch(() => undefined);
    if (ownDir) await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
