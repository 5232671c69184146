// Starts our services (and the real components around them) as child processes for the
// plant-in-a-box and the end-to-end tests: logs to files, readiness by polling, stop by PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface Proc {
  name: string;
  child: ChildProcess;
  logFile: string;
  /** SIGTERM, then SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  kill9(): Promise<void>;
  exited: Promise<number | null>;
}

// Whatever happens to the parent (an exception, EPIPE on stdout, process.exit), its services
// do not outlive it: a leftover vault or broker would hold ports, sockets and temp dirs.
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export function startProcess(name: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; logDir: string; cwd?: string; user?: { uid: number; gid: number } }): Proc {
  const logFile = path.join(opts.logDir, `${name}.log`);
  const log = createWriteStream(logFile, { flags: 'a' });
  // under its own user (scripts/plant/users.ts): setpriv also sets its supplementary groups,
  // which node's spawn({uid, gid}) would drop
  if (opts.user) [cmd, args] = ['setpriv', ['--reuid', String(opts.user.uid), '--regid', String(opts.user.gid), '--init-groups', '--', cmd, ...args]];
  const child = spawn(cmd, args, { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });
  live.add(child);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      live.delete(child);
      resolve(code);
    }),
  );
  const wait = async (ms: number): Promise<boolean> => (await Promise.race([exited.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms).unref())]));
  return {
    name,
    child,
    logFile,
    exited,
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      if (!(await wait(graceMs))) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async kill9() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
  };
}

/** The node flags of the product unit pks-`service`.service: its ExecStart= between node and the entry point. */
export function unitNodeFlags(service: string): string[] {
  const unit = path.join(ROOT, 'rootfs-overlay', 'usr', 'lib', 'systemd', 'system', `pks-${service}.service`);
  if (!existsSync(unit)) return [];
  const exec = /^ExecStart=\/usr\/bin\/node (.*)$/m.exec(readFileSync(unit, 'utf8'));
  return exec ? exec[1]!.trim().split(/\s+/).slice(0, -1) : [];
}

/**
 * Starts one of our services from its TypeScript source, or with $PKS_FROM_DIST from the
 * compiled dist/ as the box runs it, with its unit's node flags (the vault's --jitless, the
 * young generation's size), so that what the bench measures is what the box runs;
 * $PKS_NODE_ARGS: extra node flags, e.g. --cpu-prof; `user`: as root, the uid/gid it runs
 * under (as on the box).
 */
export function startService(service: string, env: NodeJS.ProcessEnv, logDir: string, name = service, user?: { uid: number; gid: number }): Proc {
  const extra = (env.PKS_NODE_ARGS ?? process.env.PKS_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const fromDist = Boolean(env.PKS_FROM_DIST ?? process.env.PKS_FROM_DIST);
  const entry = fromDist ? [...unitNodeFlags(service), path.join(ROOT, 'dist', 'services', service, 'main.js')] : ['--import', 'tsx', path.join(ROOT, 'services', service, 'main.ts')];
  return startProcess(name, process.execPath, [...extra, ...entry], { env, logDir, ...(user ? { user } : {}) });
}

/** Starts a TypeScript entry point that is not a product service (e.g. a benchmark baseline). */
export function startEntry(entry: string, env: NodeJS.ProcessEnv, logDir: string, name: string): Proc {
  const extra = (env.PKS_NODE_ARGS ?? process.env.PKS_NODE_ARGS ?? '').split(' ').filter(Boolean);
  return startProcess(name, process.execPath, [...extra, '--import', 'tsx', entry], { env, logDir });
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A free TCP port on 127.0.0.1 (bind to 0, read, close). */
export async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
