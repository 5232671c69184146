// `./build.sh bench`: issue 3's benchmark (and issue 4's import rate) in one run.
//   ours     tester API (HTTPS mTLS keep-alive) → keystore (LMDB) → vault (SoftHSM), processes
//   floor    the same issuance in one process: durable LMDB reserve/confirm + vault work, no HTTP
//   postgres the same HTTP front and vault, PostgreSQL (SKIP LOCKED queue) as the buffer
//   stock    reserve cost at 10k and at 10M keys in stock (PKS_BENCH_QUICK=1: 1M)
//   import   a 1M-key re-order through import-chunk, first chunk to all AVAILABLE
// Readable lines first; the last line is one JSON object. Every process and temp dir started
// here is stopped and removed, also on failure or Ctrl-C.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import type { ImportChunkResponse } from '../../services/keystore/contract.js';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { startFloor } from './floor.js';
import { httpInjection, testerPool } from './flow.js';
import { measureImport, type ImportResult } from './import.js';
import { runLoad, uidMaker, type LoadResult } from './load.js';
import { startPostgres } from './postgres.js';
import { makeCerts, startKeystorePg, startTesterApi, TESTER, type Certs } from './stack.js';
import { stockCost, type StockResult } from './stock.js';
import { benchDoip } from './doip.js';

const QUICK = process.env.PKS_BENCH_QUICK === '1';
const CONCURRENCY = Number(process.env.PKS_BENCH_TESTERS ?? 64);
const MEASURE_MS = Number(process.env.PKS_BENCH_SECONDS ?? (QUICK ? 10 : 20)) * 1000;
const WARMUP_MS = 3000;
const SINGLE_MS = 3000;
const KEYS_PER_RUN = Number(process.env.PKS_BENCH_KEYS ?? (QUICK ? 50_000 : 100_000));
const STOCK_LARGE = QUICK ? 1_000_000 : 10_000_000;
const STOCK_RESERVES = 20_000;
const ROUNDS = Number(process.env.PKS_BENCH_ROUNDS ?? 3);
const IMPORT_KEYS = Number(process.env.PKS_BENCH_IMPORT_KEYS ?? 1_000_000);
const BOX_ID = 'box-bench-1';
const POOL = 'oem1.bench.4';
const FLOOR_POOL = 'oem1.floor.4';
const REORDER_POOL = 'oem1.reorder.4';

const say = (s: string): void => void process.stdout.write(s + '\n');
const note = (s: string): void => say(`# ${s}`);
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const r2 = (x: number): number => Math.round(x * 100) / 100;

const cleanups: (() => Promise<unknown>)[] = [];
async function cleanup(): Promise<void> {
  while (cleanups.length) {
    const c = cleanups.pop()!;
    await c().catch((e) => note(`cleanup: ${(e as Error).message}`));
  }
}
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const)
  process.once(sig, () => {
    interrupted = true;
    note(`${sig}: cleaning up`);
    void cleanup().finally(() => process.exit(130));
  });

function loadLine(name: string, r: LoadResult): string {
  return `${name.padEnd(9)} ${f1(r.perS).padStart(8)} injections/s   p50 ${f1(r.p50).padStart(6)} ms   p99 ${f1(r.p99).padStart(6)} ms   (${r.count} in ${r.seconds.toFixed(1)} s, ${r.errors} errors${r.firstError ? `: ${r.firstError}` : ''})`;
}

async function importKeys(client: ReturnType<typeof ipcClient>, box: Box, batchId: string, n: number, master: Buffer): Promise<void> {
  const chunks = box.batch(batchId, { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys(batchId, n) });
  for (const chunk of chunks) await client.call<ImportChunkResponse>('import-chunk', { chunk }, 60_000);
}

async function registerTester(client: ReturnType<typeof ipcClient>): Promise<void> {
  await client.call('tester-put', { cn: TESTER, station: 'bench-station', pools: [POOL], expiresAt: new Date(Date.now() + 86_400_000).toISOString(), revoked: false });
}

async function httpScenario(name: string, o: { base: string; box: Box; certs: Certs; master: Buffer; phase: number }): Promise<{ load: LoadResult; single: LoadResult }> {
  const api = await startTesterApi({ dir: path.join(o.base, 'tester-api'), runDir: o.box.runDir, logDir: o.box.logDir, certs: o.certs, name: `tester-api-${name}` });
  const pool = testerPool(api.port, o.certs.tester, CONCURRENCY);
  try {
    const next = uidMaker(o.phase);
    const load = await runLoad({ concurrency: CONCURRENCY, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, inject: httpInjection(pool, POOL, o.master, next) });
    // the same path with one tester: the latency of an injection when nobody queues
    const single = await runLoad({ concurrency: 1, warmupMs: 500, measureMs: SINGLE_MS, inject: httpInjection(pool, POOL, o.master, next) });
    return { load, single };
  } finally {
    await pool.destroy().catch(() => {});
    await api.proc.stop();
  }
}

/** The tester API at a paced load: each tester pauses between ECUs (as a line does). */
async function pacedScenario(o: { base: string; box: Box; certs: Certs; master: Buffer; phase: number; thinkMs: number }): Promise<LoadResult> {
  const api = await startTesterApi({ dir: path.join(o.base, 'tester-api'), runDir: o.box.runDir, logDir: o.box.logDir, certs: o.certs, name: 'tester-api-paced' });
  const pool = testerPool(api.port, o.certs.tester, CONCURRENCY);
  try {
    return await runLoad({ concurrency: CONCURRENCY, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, thinkMs: o.thinkMs, inject: httpInjection(pool, POOL, o.master, uidMaker(o.phase)) });
  } finally {
    await pool.destroy().catch(() => {});
    await api.proc.stop();
  }
}

async function main(): Promise<void> {
  const started = performance.now();
  // the PostgreSQL baseline needs the `pg` client: fail now, not after the first scenarios
  await import('pg').catch(() => {
    throw new Error("npm package 'pg' is missing (the PostgreSQL baseline, services/keystore-pg, needs it in package.json)");
  });
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-bench-'));
  cleanups.push(() => (process.env.PKS_KEEP_TMP ? Promise.resolve() : rm(base, { recursive: true, force: true })));
  note(`PKS bench: ${CONCURRENCY} testers, ${MEASURE_MS / 1000} s per scenario after ${WARMUP_MS / 1000} s warm-up, ${os.cpus().length} CPUs${QUICK ? ', QUICK' : ''}; work dir ${base}`);
  const master = randomBytes(16);

  // --- floor: everything in this process
  note('floor: in-process keystore + vault');
  const floor = await startFloor({ dir: path.join(base, 'floor'), boxId: BOX_ID, pool: FLOOR_POOL, master, keys: randomSheKeys('floor', KEYS_PER_RUN) });
  let floorR: LoadResult;
  {
    const next = uidMaker(1);
    try {
      floorR = await runLoad({ concurrency: CONCURRENCY, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, inject: (w) => floor.inject(`t${w}`, next()) });
    } finally {
      await floor.stop();
    }
  }
  say(loadLine('floor', floorR));

  // --- ours and postgres: the same tester-api and vault; the keystore, or keystore-pg with
  // PostgreSQL behind it. They take turns (ROUNDS each, alternating) after a `sync` and a
  // pause, so neither inherits the other's disk writeback; each side's median round counts.
  note(`ours (tester-api + keystore + vault) and postgres (tester-api + keystore-pg + PostgreSQL 15 + vault), ${ROUNDS} alternating rounds each`);
  const box = await startBox({ base: path.join(base, 'box'), boxId: BOX_ID, pools: [{ pool: POOL, minimum: 1, reorder: 1 }, { pool: REORDER_POOL, minimum: 1, reorder: 1 }], checkpointEvery: 1000 });
  cleanups.push(() => box.stop());
  const certs = await makeCerts(path.join(base, 'certs'));
  const admin = box.keystore.client('pksctl');
  await registerTester(admin);
  await importKeys(admin, box, 'ours-batch', KEYS_PER_RUN * ROUNDS, master);

  // --- import of a re-order into the real keystore
  note(`import: ${IMPORT_KEYS} keys through import-chunk`);
  const imp: ImportResult = await measureImport(box, REORDER_POOL, IMPORT_KEYS);
  say(`import    ${f1(imp.keysPerS).padStart(8)} keys/s   (${imp.keys} keys in ${imp.chunks} chunks, ${imp.seconds.toFixed(1)} s; batch built in ${imp.buildSeconds.toFixed(1)} s before timing)`);

  await box.keystore.proc.stop();
  const pgs = await startPostgres();
  cleanups.push(() => pgs.stop());
  const kpgOpts = { dir: path.join(base, 'keystore-pg'), runDir: box.runDir, logDir: box.logDir, boxId: BOX_ID, kmsCa: box.kms.caCert, pools: [POOL], pg: { host: pgs.host, port: pgs.port } };
  let kpg = await startKeystorePg(kpgOpts);
  const pgAdmin = ipcClient(socketPath('keystore', 'pksctl', box.runDir), { timeoutMs: 60_000 });
  cleanups.push(() => pgAdmin.close());
  await registerTester(pgAdmin);
  await importKeys(pgAdmin, box, 'pg-batch', KEYS_PER_RUN * ROUNDS, master);
  await kpg.stop();

  const settle = async (): Promise<void> => {
    execFileSync('sync');
    await new Promise((r) => setTimeout(r, 2000));
  };
  const oursRounds: { load: LoadResult; single: LoadResult }[] = [];
  const pgRounds: { load: LoadResult; single: LoadResult }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    await box.keystore.restart();
    await settle();
    const o = await httpScenario('ours', { base, box, certs, master, phase: 10 + r });
    say(loadLine(`ours #${r + 1}`, o.load));
    oursRounds.push(o);
    await box.keystore.proc.stop();

    kpg = await startKeystorePg(kpgOpts);
    await settle();
    const g = await httpScenario('postgres', { base, box, certs, master, phase: 20 + r });
    say(loadLine(`pg #${r + 1}`, g.load));
    pgRounds.push(g);
    await kpg.stop();
  }
  const median = (rs: { load: LoadResult; single: LoadResult }[]) => [...rs].sort((a, b) => a.load.perS - b.load.perS)[Math.floor((rs.length - 1) / 2)]!;
  const { load: oursR, single: oursOne } = median(oursRounds);
  const { load: pgR, single: pgOne } = median(pgRounds);
  say(loadLine('ours', oursR));
  say(loadLine('ours x1', oursOne));
  say(loadLine('postgres', pgR));
  say(loadLine('pg x1', pgOne));
  note(`${CONCURRENCY} testers in a closed loop wait ${f1((1000 * CONCURRENCY) / oursR.perS)} ms on average at this rate (Little's law); p99 <= 25 ms at ${CONCURRENCY} testers needs well over ${Math.round((1000 * CONCURRENCY) / 25)}/s`);
  // the same 64 testers at half the rate the stack sustains: the latency a station sees when
  // the box is busy but not saturated
  const thinkMs = (1000 * CONCURRENCY) / (0.5 * oursR.perS);
  await box.keystore.restart();
  await settle();
  const paced = await pacedScenario({ base, box, certs, master, phase: 30, thinkMs });
  say(loadLine('ours paced', paced));
  await box.keystore.proc.stop();
  await pgs.stop();
  await box.stop();

  // --- stock size
  const stockDir = path.join(base, 'stock');
  const fs = statfsSync(os.tmpdir());
  const freeGb = (fs.bavail * fs.bsize) / 2 ** 30;
  let large = STOCK_LARGE;
  if (large > 1_000_000 && freeGb < 8) {
    note(`only ${freeGb.toFixed(1)} GiB free in ${os.tmpdir()}: stock test uses 1M instead of 10M`);
    large = 1_000_000;
  }
  note(`stock: reserve cost at 10k and at ${large} keys (${freeGb.toFixed(0)} GiB free)`);
  const [small, big] = (await stockCost({ dir: stockDir, sizes: [10_000, large], reserves: STOCK_RESERVES, concurrency: CONCURRENCY, log: note })) as [StockResult, StockResult];
  await rm(stockDir, { recursive: true, force: true });
  const stockRatio = big.usPerReserve / small.usPerReserve;
  say(`stock     ${f1(small.usPerReserve)} µs/reserve at 10k, ${f1(big.usPerReserve)} µs/reserve at ${large} (median of ${small.rounds.length} alternating rounds; ${large} loaded in ${big.loadSeconds.toFixed(0)} s)   ratio ${stockRatio.toFixed(2)}`);
  say(`          rounds µs/reserve: 10k [${small.rounds.map(f1).join(', ')}]   ${large} [${big.rounds.map(f1).join(', ')}]`);

  const vsPg = oursR.perS / pgR.perS;
  const vsFloor = oursR.perS / floorR.perS;
  const targets = { vs_postgres: vsPg >= 2, vs_floor: vsFloor >= 0.5, p99_ms: oursR.p99 <= 25, stock_10m_vs_10k: stockRatio <= 1.2, import_keys_per_s: imp.keysPerS >= 50_000 };
  say(`ratios    ours/postgres ${vsPg.toFixed(2)} (target >= 2)   ours/floor ${vsFloor.toFixed(2)} (target >= 0.5)   p99 ${f1(oursR.p99)} ms (target <= 25)   stock ${stockRatio.toFixed(2)} (target <= 1.2)   import ${f1(imp.keysPerS)}/s (target >= 50000)`);
  note('doip: injections per DoIP connection and one ECU\'s time (test/bench/doip.ts)');
  const doip = await benchDoip({ say });
  say(`targets   ${Object.entries(targets).map(([k, v]) => `${k} ${v ? 'met' : 'MISSED'}`).join(', ')}; total ${((performance.now() - started) / 1000).toFixed(0)} s`);
  say(
    JSON.stringify({
      injections_per_s: r2(oursR.perS),
      p50_ms: r2(oursR.p50),
      p99_ms: r2(oursR.p99),
      floor_per_s: r2(floorR.perS),
      floor_p99_ms: r2(floorR.p99),
      paced_per_s: r2(paced.perS),
      paced_p50_ms: r2(paced.p50),
      paced_p99_ms: r2(paced.p99),
      single_tester_p50_ms: r2(oursOne.p50),
      single_tester_p99_ms: r2(oursOne.p99),
      postgres_per_s: r2(pgR.perS),
      postgres_p50_ms: r2(pgR.p50),
      postgres_p99_ms: r2(pgR.p99),
      postgres_single_p99_ms: r2(pgOne.p99),
      vs_postgres: r2(vsPg),
      vs_floor: r2(vsFloor),
      stock_us_10k: r2(small.usPerReserve),
      stock_us_large: r2(big.usPerReserve),
      stock_10m_vs_10k: r2(stockRatio),
      stock_size_large: large,
      import_keys_per_s: r2(imp.keysPerS),
      testers: CONCURRENCY,
      measure_s: MEASURE_MS / 1000,
      errors: { ours: oursR.errors, floor: floorR.errors, postgres: pgR.errors },
      targets_met: targets,
      ...doip,
    }),
  );
}

try {
  await main();
} catch (e) {
  if (!interrupted) {
    note(`bench failed: ${(e as Error).stack ?? String(e)}`);
    process.exitCode = 1;
  }
} finally {
  await cleanup();
}
