// pks-updater as a process (services/updater/main.ts, READY via runService) and `pksctl update`
// against it, on the RAUC host of rauc-host.ts: a refused bundle is a coded exit, a good one
// runs drain -> install -> reboot request; after the "reboot" the service started on the new
// slot health-checks, marks good and raises the floor, and `pksctl update status` says so.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readFloor } from '../../services/updater/floor.js';
import { makeBundle, repoRoot, startRaucHost, type RaucHost } from './rauc-host.js';

let h: RaucHost;
let dir: string;
let svc: ChildProcess | null = null;

const env = () => ({ ...process.env, ...h.env, PKS_RUN_DIR: path.join(dir, 'run'), PKS_CONFIG: path.join(dir, 'updater.json'), PKS_UPDATER_INBOX: path.join(dir, 'state/inbox'), PKS_LOG_LEVEL: 'warn' });

async function startUpdater(): Promise<void> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'services/updater/main.ts')], { cwd: repoRoot, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
  svc = child;
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const sock = path.join(dir, 'run/updater/pksctl.sock');
  for (let i = 0; i < 200 && !existsSync(sock); i++) {
    if (child.exitCode !== null) throw new Error(`updater exited: ${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!existsSync(sock)) throw new Error(`updater socket missing: ${log}`);
}
async function stopUpdater(): Promise<void> {
  const c = svc;
  svc = null;
  if (c && c.exitCode === null) {
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await gone;
  }
}

function pksctl(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [path.join(repoRoot, 'bin/pksctl.mjs'), ...args], { cwd: repoRoot, env: env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.once('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

test.before(async () => {
  h = await startRaucHost({ slotBytes: 8 << 20 });
  dir = mkdtempSync(path.join(os.tmpdir(), 'pks-updater-svc-'));
  mkdirSync(path.join(dir, 'run'), { recursive: true });
  writeFileSync(
    path.join(dir, 'updater.json'),
    JSON.stringify({ boxId: 'box-1', stateDir: path.join(dir, 'state'), rauc: { conf: h.conf }, tcti: h.tpm.tcti, health: { units: [], keystore: false, vault: false, timeoutSeconds: 5, intervalSeconds: 0.2 }, rebootFile: path.join(dir, 'run/updater/reboot') }),
  );
  await startUpdater();
});
test.after(async () => {
  await stopUpdater();
  await h?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('pksctl update install: a downgrade is a coded refusal (exit 2), nothing changes', async () => {
  const b = makeBundle({ version: '0.0.9', svn: 1, out: path.join(dir, 'old.raucb') });
  const r = await pksctl(['update', 'install', b]);
  assert.is(r.code, 2, r.out + r.err);
  assert.match(r.err, 'PKS_UPDATE_DOWNGRADE');
  assert.equal(h.entries(), ['pks-0-B+0-3.efi', 'pks-1-A.efi']);
});

test('pksctl update install: installs, asks for the reboot; after it the new slot is marked good', async () => {
  const b = makeBundle({ version: '1.1.0', svn: 2, bytes: 4 << 20, out: path.join(dir, 'new.raucb') });
  const t0 = Date.now();
  const r = await pksctl(['update', 'install', b, '--json']);
  const ms = Date.now() - t0;
  assert.is(r.code, 0, r.out + r.err);
  const lines = r.out.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(lines.some((l) => l.phase === 'installing'), r.out);
  assert.equal(lines.at(-1), { ok: true, version: '1.1.0', slot: 'B', next: 'reboot' });
  assert.ok(existsSync(path.join(dir, 'run/updater/reboot')), 'reboot requested');
  console.log(`pksctl update install of a 4 MiB bundle: ${ms} ms`);
  // the reboot: services stop, systemd-boot picks B, the updater starts there
  await stopUpdater();
  assert.is(await h.boot(), 'B');
  await startUpdater();
  let s: Record<string, any> = {};
  for (let i = 0; i < 100; i++) {
    const st = await pksctl(['update', 'status', '--json']);
    s = JSON.parse(st.out) as Record<string, any>;
    if (s.last) break;
    await new Promise((res) => setTimeout(res, 100));
  }
  assert.is(s.last?.ok, true, JSON.stringify(s));
  assert.equal(s.booted, { slot: 'B', version: '1.1.0' });
  assert.is(s.floor, 2);
  assert.is(await readFloor(h.tpm.tcti), 2);
  const text = await pksctl(['update', 'status']);
  assert.match(text.out, 'last:    OK 1.1.0');
});

test.run();
