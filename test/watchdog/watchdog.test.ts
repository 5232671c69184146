// sd_notify as systemd sees it: a NOTIFY_SOCKET listener (a unix datagram socket; Node has
// none, so a few lines of python3) receives READY=1 only once the service serves, WATCHDOG=1
// every WATCHDOG_USEC/2, and no pings while the service's event loop is blocked.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ROOT } from '../../scripts/plant/process.js';

const LISTENER = `
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("LISTENING", flush=True)
while True:
    d = s.recv(4096)
    print("%d %s" % (int(time.time() * 1000), d.decode("utf-8", "replace").strip().replace("\\n", "|")), flush=True)
`;

interface Datagram {
  at: number;
  text: string;
}

interface Ctx {
  dir: string;
  listener: ChildProcess;
  service: ChildProcess;
  got: Datagram[];
  spawnedAt: number;
  serviceSock: string;
}

const t = suite<Ctx>('watchdog over NOTIFY_SOCKET');

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
async function until<T>(what: string, f: () => T | undefined, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}
const connects = (sock: string): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.createConnection(sock);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
const pings = (got: Datagram[], from = 0, to = Infinity): Datagram[] => got.filter((d) => /(^|\|)WATCHDOG=1(\||$)/.test(d.text) && d.at >= from && d.at <= to);

t.before(async (ctx) => {
  ctx.dir = mkdtempSync(path.join(tmpdir(), 'pks-wd-'));
  ctx.got = [];
  const notify = path.join(ctx.dir, 'notify.sock');
  ctx.serviceSock = path.join(ctx.dir, 'fixture.sock');
  ctx.listener = spawn('python3', ['-c', LISTENER, notify], { stdio: ['ignore', 'pipe', 'inherit'] });
  let listening = false;
  createInterface({ input: ctx.listener.stdout! }).on('line', (line) => {
    if (line === 'LISTENING') {
      listening = true;
      return;
    }
    const i = line.indexOf(' ');
    ctx.got.push({ at: Number(line.slice(0, i)), text: line.slice(i + 1) });
  });
  await until('listener', () => (listening ? true : undefined));
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NOTIFY_SOCKET: notify,
    WATCHDOG_USEC: '400000',
    PKS_WATCHDOG_FIXTURE: '1',
    FIXTURE_SOCKET: ctx.serviceSock,
    FIXTURE_START_DELAY_MS: '500',
    FIXTURE_BLOCK_MS: '2000',
  };
  delete env.WATCHDOG_PID;
  ctx.spawnedAt = Date.now();
  ctx.service = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'test', 'watchdog', 'fixture.ts')], { env, stdio: ['ignore', 'ignore', 'inherit'] });
});

t.after(async (ctx) => {
  for (const p of [ctx.service, ctx.listener]) {
    if (p && p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([gone, sleep(3000)]);
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  }
  rmSync(ctx.dir, { recursive: true, force: true });
});

t('READY=1 comes only once the service serves, and before any ping', async (ctx) => {
  const ready = await until('READY=1', () => ctx.got.find((d) => /(^|\|)READY=1(\||$)/.test(d.text)));
  // the socket must already accept at the moment READY arrives
  assert.ok(await connects(ctx.serviceSock), 'service serves when READY arrives');
  assert.ok(ready.at - ctx.spawnedAt >= 500, `READY after the start delay (${ready.at - ctx.spawnedAt} ms)`);
  assert.match(ready.text, /STATUS=fixture serving/);
  assert.is(pings(ctx.got, 0, ready.at - 1).length, 0, 'no WATCHDOG before READY');
});

t('WATCHDOG=1 every WATCHDOG_USEC/2 (200 ms)', async (ctx) => {
  const start = Date.now();
  await sleep(1500);
  const p = pings(ctx.got, start);
  assert.ok(p.length >= 5 && p.length <= 9, `${p.length} pings in 1.5 s`);
  const gaps = p.slice(1).map((d, i) => d.at - p[i]!.at).sort((a, b) => a - b);
  const median = gaps[Math.floor(gaps.length / 2)]!;
  assert.ok(median >= 170 && median <= 260, `median gap ${median} ms`);
});

t('the pings stop while the event loop is blocked, and come back after', async (ctx) => {
  await sleep(300);
  const before = Date.now();
  ctx.service.kill('SIGUSR2');
  await sleep(2800);
  const p = pings(ctx.got, before - 1000);
  const gaps = p.slice(1).map((d, i) => ({ from: p[i]!.at, gap: d.at - p[i]!.at }));
  const longest = gaps.reduce((a, b) => (b.gap > a.gap ? b : a));
  assert.ok(longest.gap >= 1800, `longest gap ${longest.gap} ms`);
  assert.ok(longest.from >= before - 300 && longest.from <= before + 300, 'the gap starts at the block');
  // no ping inside the blocked window, regular ones after it
  assert.is(pings(ctx.got, before + 150, before + 1850).length, 0);
  assert.ok(pings(ctx.got, before + 2000).length >= 2, 'pings resume');
  assert.is(ctx.service.exitCode, null, 'still running');
});

t.run();

// The same contract on a real service: the sentinel says READY only once its pksctl socket
// answers (nothing else of the box is running: its checks raise alerts, mails stay queued).
const s2 = suite<{ dir: string; listener: ChildProcess; service: ChildProcess; got: Datagram[] }>('sentinel READY over NOTIFY_SOCKET');

s2.before(async (ctx) => {
  ctx.dir = mkdtempSync(path.join(tmpdir(), 'pks-wd-'));
  ctx.got = [];
  const notify = path.join(ctx.dir, 'notify.sock');
  ctx.listener = spawn('python3', ['-c', LISTENER, notify], { stdio: ['ignore', 'pipe', 'inherit'] });
  let listening = false;
  createInterface({ input: ctx.listener.stdout! }).on('line', (line) => {
    if (line === 'LISTENING') listening = true;
    else ctx.got.push({ at: Number(line.slice(0, line.indexOf(' '))), text: line.slice(line.indexOf(' ') + 1) });
  });
  await until('listener', () => (listening ? true : undefined));
  const { writePlantSentinelConfig } = await import('../../services/sentinel/plant-config.js');
  const config = await writePlantSentinelConfig({ dir: path.join(ctx.dir, 'sentinel'), boxId: 'box-wd', smtpPort: 9, everySeconds: 5 });
  const env: NodeJS.ProcessEnv = { ...process.env, NOTIFY_SOCKET: notify, WATCHDOG_USEC: '400000', PKS_CONFIG: config, PKS_RUN_DIR: path.join(ctx.dir, 'run') };
  delete env.WATCHDOG_PID;
  ctx.service = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'services', 'sentinel', 'main.ts')], { env, stdio: 'ignore' });
});

s2.after(async (ctx) => {
  for (const p of [ctx.service, ctx.listener]) {
    if (p && p.exitCode === null && p.signalCode === null) {
      const gone = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([gone, sleep(5000)]);
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
  }
  rmSync(ctx.dir, { recursive: true, force: true });
});

s2('READY once the pksctl socket answers, then pings every 200 ms, STOPPING on SIGTERM', async (ctx) => {
  await until('READY=1', () => ctx.got.find((d) => /(^|\|)READY=1(\||$)/.test(d.text)), 30_000);
  const { ipcClient } = await import('../../appliance/ipc.js');
  const c = ipcClient(path.join(ctx.dir, 'run', 'sentinel', 'pksctl.sock'), { timeoutMs: 5000 });
  try {
    const r = await c.call<{ open: unknown[] }>('alerts', {});
    assert.ok(Array.isArray(r.open));
  } finally {
    await c.close();
  }
  const from = Date.now();
  await sleep(1100);
  assert.ok(pings(ctx.got, from).length >= 4, 'pings');
  ctx.service.kill('SIGTERM');
  await until('STOPPING=1', () => ctx.got.find((d) => /(^|\|)STOPPING=1(\||$)/.test(d.text)), 10_000);
  const code = await new Promise((r) => (ctx.service.exitCode !== null ? r(ctx.service.exitCode) : ctx.service.once('exit', (c) => r(c))));
  assert.is(code, 0);
});

s2.run();
