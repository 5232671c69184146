// A private PostgreSQL 15 cluster for the baseline: its own data directory in a temp dir,
// listening only on a unix socket in that dir, stopped (and removed) by the bench. As root the
// server runs as the `postgres` user, which must own the directory.
import { execFile } from 'node:child_process';
import { chmod, chown, mkdtemp, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const BIN = process.env.PKS_PG_BIN ?? '/usr/lib/postgresql/15/bin';

export interface Postgres {
  /** unix socket directory, usable as the pg `host` */
  host: string;
  port: number;
  stop(): Promise<void>;
}

async function asPg(cmd: string, args: string[], uid: number | null): Promise<void> {
  const bin = path.join(BIN, cmd);
  if (uid === null) await run(bin, args, { timeout: 60_000 });
  else await run('runuser', ['-u', 'postgres', '--', bin, ...args], { timeout: 60_000 });
}

async function pgUser(): Promise<{ uid: number; gid: number } | null> {
  if (process.getuid?.() !== 0) return null;
  const line = (await readFile('/etc/passwd', 'utf8')).split('\n').find((l) => l.startsWith('postgres:'));
  if (!line) throw new Error('running as root but there is no postgres user (install Debian postgresql)');
  const f = line.split(':');
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

export async function startPostgres(): Promise<Postgres> {
  if (!existsSync(path.join(BIN, 'postgres'))) throw new Error(`PostgreSQL binaries not found in ${BIN} (scripts/deps.sh bench)`);
  const user = await pgUser();
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-bench-pg-'));
  const data = path.join(base, 'data');
  const port = 40000 + Math.floor(Math.random() * 20000);
  let started = false;
  const stop = async (): Promise<void> => {
    if (started) {
      await asPg('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop'], user ? user.uid : null).catch(async () => {
        // pg_ctl failed: end the postmaster by its own pid file
        const pid = Number((await readFile(path.join(data, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0]);
        if (pid > 1) process.kill(pid, 'SIGQUIT');
      });
      started = false;
    }
    await rm(base, { recursive: true, force: true });
  };
  try {
    await chmod(base, 0o755);
    if (user) await chown(base, user.uid, user.gid);
    await asPg('initdb', ['-D', data, '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C', '-U', 'postgres'], user ? user.uid : null);
    // durable commits (synchronous_commit on, fsync on, full pages), sized for the run, no
    // checkpoint in the middle of it, autovacuum awake often enough for the per-table thresholds
    await appendFile(
      path.join(data, 'postgresql.conf'),
      [
        "listen_addresses = ''",
        `unix_socket_directories = '${base}'`,
        `port = ${port}`,
        'max_connections = 200',
        'shared_buffers = 512MB',
        'synchronous_commit = on',
        'fsync = on',
        'full_page_writes = on',
        'wal_level = minimal',
        'max_wal_senders = 0',
        'wal_buffers = 16MB',
        'max_wal_size = 8GB',
        'checkpoint_timeout = 30min',
        'autovacuum = on',
        'autovacuum_naptime = 1s',
        'log_min_messages = warning',
        '',
      ].join('\n'),
    );
    await writeFile(path.join(base, 'pg.log'), '');
    if (user) await chown(path.join(base, 'pg.log'), user.uid, user.gid);
    await asPg('pg_ctl', ['-D', data, '-l', path.join(base, 'pg.log'), '-w', '-t', '60', 'start'], user ? user.uid : null);
    started = true;
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
  return { host: base, port, stop };
}
