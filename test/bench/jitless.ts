// Issue 18: what `node --jitless` (the price of MemoryDenyWriteExecute=yes) costs each service.
// Runs every figure twice, in a child node with the JIT and one with --jitless, side by side:
//   floor    the keystore's issuance path in one process (durable LMDB reserve + confirm, audit,
//            the in-process vault on SoftHSM, the SHE ECU simulation), 64 concurrent testers
//   startup  wall time to load each service's module graph from dist/ (what every start and
//            every restart after a kill or a watchdog pays)
//   request  CPU per request of a fastify route with a JSON schema (the shape of every IPC verb
//            and every tester API route), through fastify.inject
//   ipc      whether the service's IPC client (undici) works at all: it compiles llhttp with
//            WebAssembly, which --jitless turns off
// Usage: node --import tsx test/bench/jitless.ts [--seconds N]; the last line is one JSON object.
// Needs `npm run build` first (dist/).
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const SERVICES: Record<string, string> = {
  keystore: 'dist/services/keystore/keystore.js',
  'tester-api': 'dist/services/tester-api/app.js',
  uplink: 'dist/services/uplink/uplink.js',
  sentinel: 'dist/services/sentinel/sentinel.js',
};

type Figures = Record<string, number | boolean | string>;

async function child(mode: string, seconds: number): Promise<Figures> {
  if (mode === 'floor') {
    const { startFloor } = await import('./floor.js');
    const { runLoad, uidMaker } = await import('./load.js');
    const { randomSheKeys } = await import('../../scripts/plant/batch.js');
    const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-jitless-'));
    try {
      const floor = await startFloor({ dir, boxId: 'box-jitless', pool: 'oem1.floor.4', master: randomBytes(16), keys: randomSheKeys('floor', 40_000) });
      const next = uidMaker(1);
      const cpu0 = process.cpuUsage();
      const r = await runLoad({ concurrency: 64, warmupMs: 2000, measureMs: seconds * 1000, inject: (w) => floor.inject(`t${w}`, next()) });
      const cpu = process.cpuUsage(cpu0);
      await floor.stop();
      return { per_s: Math.round(r.perS), p50_ms: r.p50, p99_ms: r.p99, errors: r.errors, cpu_us_per_injection: Math.round((cpu.user + cpu.system) / Math.max(1, r.count)) };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
  if (mode.startsWith('startup:')) {
    const t0 = performance.now();
    await import(pathToFileURL(path.join(ROOT, SERVICES[mode.slice(8)]!)).href);
    return { ms: Math.round(performance.now() - t0) };
  }
  if (mode === 'request') {
    const { default: Fastify } = await import('fastify');
    const app = Fastify({ logger: false });
    const body = { type: 'object', additionalProperties: false, required: ['pool', 'uid', 'tester'], properties: { pool: { type: 'string', maxLength: 64 }, uid: { type: 'string', pattern: '^[0-9a-f]{30}$' }, tester: { type: 'string', maxLength: 64 } } };
    app.post('/v1/reserve', { schema: { body } }, async (req) => ({ ok: true, echo: req.body, packageId: randomBytes(16).toString('hex') }));
    await app.ready();
    const payload = { pool: 'oem1.ecu.4', uid: 'ab'.repeat(15), tester: 'tester-1' };
    const one = () => app.inject({ method: 'POST', url: '/v1/reserve', payload });
    for (let i = 0; i < 500; i++) await one();
    const n = 5000;
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < n; i++) await one();
    const cpu = process.cpuUsage(cpu0);
    await app.close();
    return { cpu_us_per_request: Math.round((cpu.user + cpu.system) / n) };
  }
  if (mode === 'ipc') {
    const { ipcClient } = await import('../../appliance/ipc.js');
    const c = ipcClient(path.join(os.tmpdir(), `pks-jitless-none-${process.pid}.sock`), { timeoutMs: 1000 });
    try {
      await c.call('status');
      return { works: true };
    } catch (e) {
      const m = (e as Error).message;
      // a refused connection is the transport working; anything else is the client itself failing
      return { works: /PKS_IPC_UNAVAILABLE|ENOENT|ECONNREFUSED/.test(`${(e as { code?: string }).code} ${m}`), error: m.slice(0, 120) };
    } finally {
      await c.close().catch(() => undefined);
    }
  }
  throw new Error(`unknown mode ${mode}`);
}

function run(mode: string, jitless: boolean, seconds: number): Figures {
  const args = [...(jitless ? ['--jitless'] : []), '--import', 'tsx', fileURLToPath(import.meta.url), '--child', mode, '--seconds', String(seconds)];
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: 300_000 });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as Figures;
  } catch {
    return { failed: true, error: (r.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? `exit ${r.status}`).slice(0, 160) };
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const seconds = Number(argv[argv.indexOf('--seconds') + 1] || 8);
  const ci = argv.indexOf('--child');
  if (ci >= 0) {
    process.stdout.write(JSON.stringify(await child(argv[ci + 1]!, seconds)) + '\n');
    return;
  }
  if (!existsSync(path.join(ROOT, 'dist/services'))) execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  const out: Record<string, { jit: Figures; jitless: Figures }> = {};
  const modes = ['ipc', 'request', ...Object.keys(SERVICES).map((s) => `startup:${s}`), 'floor'];
  for (const m of modes) {
    // alternate the order so neither side always runs on a warm page cache
    const jit = run(m, false, seconds);
    const jl = run(m, true, seconds);
    out[m] = { jit, jitless: jl };
    process.stdout.write(`${m.padEnd(20)} jit ${JSON.stringify(jit)}   jitless ${JSON.stringify(jl)}\n`);
  }
  const num = (f: Figures, k: string): number => (typeof f[k] === 'number' ? (f[k] as number) : NaN);
  const ratio = (m: string, k: string): number => Math.round((num(out[m]!.jitless, k) / num(out[m]!.jit, k)) * 100) / 100;
  const summary: Record<string, unknown> = {
    ipc_client_works_jitless: out.ipc!.jitless.works === true,
    floor_per_s_jit: num(out.floor!.jit, 'per_s'),
    floor_per_s_jitless: num(out.floor!.jitless, 'per_s'),
    floor_cpu_x: ratio('floor', 'cpu_us_per_injection'),
    request_cpu_us_jit: num(out.request!.jit, 'cpu_us_per_request'),
    request_cpu_us_jitless: num(out.request!.jitless, 'cpu_us_per_request'),
  };
  for (const s of Object.keys(SERVICES)) {
    summary[`startup_ms_${s}_jit`] = num(out[`startup:${s}`]!.jit, 'ms');
    summary[`startup_ms_${s}_jitless`] = num(out[`startup:${s}`]!.jitless, 'ms');
  }
  process.stdout.write(JSON.stringify(summary) + '\n');
}

await main();
