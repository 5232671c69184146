// `./build.sh bench`: issue 11's benchmark (issues 3 and 4 before it) in one run, every
// service started from dist/ as the box runs it (the bench builds dist/ first).
//   floor    the issuance in one process: durable LMDB reserve/confirm (group commit) + vault work
//   buffer   the buffer alone in this process: durable reserve + confirm with audit entries, LMDB
//            (the keystore's transactions) against PostgreSQL in its best form
//   ours     tester API (HTTPS mTLS keep-alive) → keystore (LMDB) → vault (SoftHSM), processes,
//            with the uplink and sentinel running beside them (memory of all five)
//   postgres the same HTTP front and vault, PostgreSQL (SKIP LOCKED queue) as the buffer
//   single   one tester alone on each
//   open     arrivals at a fixed rate: 25, 50, 75 and 90 % of ours' closed-loop rate; SVG curve
//   stock    reserve cost at 10k and at 10M keys in stock (PKS_BENCH_QUICK=1: 1M)
//   import   a 1M-key re-order through import-chunk, first chunk to all AVAILABLE
// The load generator's ECUs answer from precomputed proofs (ecu-answers.ts); its CPU share is
// reported. Readable lines first; the last line is one JSON object. Every process and temp dir
// started here is stopped and removed, also on failure or Ctrl-C (PKS_KEEP_TMP=1 keeps them).
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { LOAD_QUOTAS, startBox, type Box } from '../../scripts/plant/box.js';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { ROOT } from '../../scripts/plant/process.js';
import type { ImportChunkResponse } from '../../appliance/contracts/keystore.js';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { lmdbBuffer, pgBuffer } from './buffer.js';
import { EcuAnswers } from './ecu-answers.js';
import { startFloor } from './floor.js';
import { httpInjection, testerPool } from './flow.js';
import { measureImport, type ImportResult } from './import.js';
import { runLoad, runOpenLoop, uidMaker, type LoadResult, type OpenLoopResult } from './load.js';
import { meter, type Metered } from './meter.js';
import { startPostgres } from './postgres.js';
import { makeCerts, startKeystorePg, startQuietServices, startTesterApi, TESTER, type Certs } from './stack.js';
import { stockCost, type StockResult } from './stock.js';
import { benchDoip } from './doip.js';
import { unlockBench } from './unlock.js';
import { curveSvg } from './svg.js';

const QUICK = process.env.PKS_BENCH_QUICK === '1';
const CONCURRENCY = Number(process.env.PKS_BENCH_TESTERS ?? 64);
const MEASURE_MS = Number(process.env.PKS_BENCH_SECONDS ?? (QUICK ? 8 : 12)) * 1000;
const OPEN_MS = Number(process.env.PKS_BENCH_OPEN_SECONDS ?? (QUICK ? 6 : 10)) * 1000;
const WARMUP_MS = 3000;
const SINGLE_MS = 4000;
const KEYS_PER_RUN = Number(process.env.PKS_BENCH_KEYS ?? 20_000);
const STOCK_LARGE = QUICK ? 1_000_000 : 10_000_000;
const STOCK_RESERVES = 20_000;
const ROUNDS = Number(process.env.PKS_BENCH_ROUNDS ?? 2);
const IMPORT_KEYS = Number(process.env.PKS_BENCH_IMPORT_KEYS ?? 1_000_000);
const OPEN_LEVELS = [0.25, 0.5, 0.75, 0.9];
const BOX_ID = 'box-bench-1';
const POOL = 'oem1.bench.4';
const FLOOR_POOL = 'oem1.floor.4';
const REORDER_POOL = 'oem1.reorder.4';
const SHE = { keyId: 4, authKeyId: 1, counter: 1 };
const OUT = process.env.PKS_BENCH_OUT ?? path.join(ROOT, 'dist', 'bench');

const say = (s: string): void => void process.stdout.write(s + '\n');
const note = (s: string): void => say(`# ${s}`);
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
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
  return `${name.padEnd(10)} ${f1(r.perS).padStart(8)} /s   p50 ${f2(r.p50).padStart(7)} ms   p99 ${f2(r.p99).padStart(7)} ms   (${r.count} in ${r.seconds.toFixed(1)} s, ${r.errors} errors${r.firstError ? `: ${r.firstError}` : ''})`;
}
function cpuLine(m: Metered): string {
  return `           cpu: load generator ${f2(m.loadgenCores)} cores (${(100 * m.loadgenShare).toFixed(0)} % of bench + services), ${Object.entries(m.serviceCpuS).map(([n, s]) => `${n} ${f2(s / m.wallS)}`).join(', ')} cores; load average ${f1(m.loadavg)}`;
}

async function importKeys(client: ReturnType<typeof ipcClient>, box: Box, batchId: string, keys: { id: string; key: Buffer }[], master: Buffer): Promise<void> {
  const chunks = box.batch(batchId, { pool: POOL, ...SHE, flags: 0, authKey: master, keys });
  for (const chunk of chunks) await client.call<ImportChunkResponse>('import-chunk', { chunk }, 60_000);
}

async function registerTester(client: ReturnType<typeof ipcClient>): Promise<void> {
  await client.call('tester-put', { cn: TESTER, station: 'bench-station', pools: [POOL], expiresAt: new Date(Date.now() + 86_400_000).toISOString(), revoked: false });
}

interface Round {
  load: LoadResult;
  single: LoadResult;
  metered: Metered;
}

async function httpScenario(name: string, o: { base: string; box: Box; certs: Certs; answers: EcuAnswers; phase: number; pids: Record<string, number> }): Promise<Round> {
  const api = await startTesterApi({ dir: path.join(o.base, 'tester-api'), runDir: o.box.runDir, logDir: o.box.logDir, certs: o.certs, name: `tester-api-${name}` });
  const pool = testerPool(api.port, o.certs.tester, CONCURRENCY);
  try {
    const next = uidMaker(o.phase);
    const inject = httpInjection(pool, POOL, o.answers, next);
    // metered over warm-up and window alike: the services' memory at full load
    const m = meter({ ...o.pids, 'tester-api': api.proc.child.pid! }, { memory: true });
    const load = await runLoad({ concurrency: CONCURRENCY, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, inject });
    const metered = await m.stop();
    // the same path with one tester: the latency of an injection when nobody queues
    const single = await runLoad({ concurrency: 1, warmupMs: 500, measureMs: SINGLE_MS, inject });
    return { load, single, metered };
  } finally {
    await pool.destroy().catch(() => {});
    await api.proc.stop();
  }
}

async function openScenario(o: { base: string; box: Box; certs: Certs; answers: EcuAnswers; phase: number; rate: number; pids: Record<string, number> }): Promise<OpenLoopResult & { metered: Metered }> {
  const api = await startTesterApi({ dir: path.join(o.base, 'tester-api'), runDir: o.box.runDir, logDir: o.box.logDir, certs: o.certs, name: 'tester-api-open' });
  const pool = testerPool(api.port, o.certs.tester, CONCURRENCY);
  try {
    const inject = httpInjection(pool, POOL, o.answers, uidMaker(o.phase));
    // open the connections first: their TLS handshakes are not part of any arrival
    await runLoad({ concurrency: CONCURRENCY, warmupMs: 0, measureMs: 500, inject });
    const m = meter({ ...o.pids, 'tester-api': api.proc.child.pid! });
    const r = await runOpenLoop({ ratePerS: o.rate, warmupMs: 2000, measureMs: OPEN_MS, testers: CONCURRENCY, inject });
    return { ...r, metered: await m.stop() };
  } finally {
    await pool.destroy().catch(() => {});
    await api.proc.stop();
  }
}

async function flushProbe(dir: string): Promise<{ p50: number; p99: number }> {
  const { openDbs } = await import('../../services/keystore/db.js');
  const dbs = openDbs(dir, { mapSizeMb: 64 });
  const xs: number[] = [];
  try {
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await dbs.meta.put(`p${i}`, i);
      await dbs.root.flushed;
      xs.push(performance.now() - t);
    }
  } finally {
    await dbs.root.close();
  }
  xs.sort((a, b) => a - b);
  return { p50: xs[100]!, p99: xs[197]! };
}

async function main(): Promise<void> {
  const started = performance.now();
  // the PostgreSQL baseline needs the `pg` client: fail now, not after the first scenarios
  await import('pg').catch(() => {
    throw new Error("npm package 'pg' is missing (the PostgreSQL baseline needs it in package.json)");
  });
  if (!process.env.PKS_BENCH_NO_BUILD) {
    note('building dist/ (the services run from it, as on the box)');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' });
  }
  process.env.PKS_FROM_DIST = '1';
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-bench-'));
  cleanups.push(() => (process.env.PKS_KEEP_TMP ? Promise.resolve() : rm(base, { recursive: true, force: true })));
  await mkdir(OUT, { recursive: true });
  note(`PKS bench: ${CONCURRENCY} testers, ${MEASURE_MS / 1000} s per scenario after ${WARMUP_MS / 1000} s warm-up, ${os.cpus().length} CPUs, load average ${os.loadavg().map(f1).join(' ')}${QUICK ? ', QUICK' : ''}; work dir ${base}`);
  const master = randomBytes(16);

  // --- what one flush costs on this disk right now: it bounds everything durable below
  const flushMs = await flushProbe(path.join(base, 'flush-probe'));
  say(`flush      one durable LMDB put + flushed, serial: p50 ${f2(flushMs.p50)} ms, p99 ${f2(flushMs.p99)} ms`);

  // --- floor: everything in this process
  note('floor: in-process keystore (group commit) + vault, precomputed ECU answers');
  const floor = await startFloor({ dir: path.join(base, 'floor'), boxId: BOX_ID, pool: FLOOR_POOL, master, keys: randomSheKeys('floor', 2 * KEYS_PER_RUN) });
  let floorR: LoadResult;
  let floorM: Metered;
  {
    const next = uidMaker(1);
    try {
      const m = meter({});
      floorR = await runLoad({ concurrency: CONCURRENCY, warmupMs: WARMUP_MS, measureMs: MEASURE_MS, inject: (w) => floor.inject(`t${w}`, next()) });
      floorM = await m.stop();
    } finally {
      await floor.stop();
    }
  }
  say(loadLine('floor', floorR));
  note(`floor bound: its one JS thread (HSM calls through PKCS#11, LMDB transactions, SHE in the vault) kept ${f2(floorM.loadgenCores)} of ${os.cpus().length} cores busy; the rest of the time the ${CONCURRENCY} injections in flight wait for the disk: two flushes each (reserve, confirm), shared by group commit, at the flush times measured above`);

  // --- the buffer alone
  const pgs = await startPostgres();
  cleanups.push(() => pgs.stop());
  note('buffer: durable reserve + confirm with audit entries, in process, LMDB vs PostgreSQL');
  const bufL = await lmdbBuffer({ dir: base, keys: 400_000, concurrency: CONCURRENCY, warmupMs: 2000, measureMs: MEASURE_MS / 2 });
  say(loadLine('buf lmdb', bufL) + `  [${bufL.groups} groups, largest ${bufL.largest}]`);
  const bufP = await pgBuffer({ pg: pgs, keys: 150_000, concurrency: CONCURRENCY, warmupMs: 2000, measureMs: MEASURE_MS / 2 });
  say(loadLine('buf pg', bufP));

  // --- the box
  note(`ours (tester-api + keystore + vault, uplink + sentinel beside) and postgres (tester-api + keystore-pg + PostgreSQL 15 + vault), ${ROUNDS} alternating rounds each`);
  const box = await startBox({ base: path.join(base, 'box'), boxId: BOX_ID, pools: [{ pool: POOL, minimum: 1, reorder: 1 }, { pool: REORDER_POOL, minimum: 1, reorder: 1 }], checkpointEvery: 1000, quotas: LOAD_QUOTAS });
  cleanups.push(() => box.stop());
  const quiet = await startQuietServices({ base: path.join(base, 'quiet'), runDir: box.runDir, logDir: box.logDir, boxId: BOX_ID, keystoreDataDir: box.keystore.dataDir, kmsCaFile: box.kms.caCert });
  cleanups.push(() => quiet.stop());
  const certs = await makeCerts(path.join(base, 'certs'));
  const admin = box.keystore.client('pksctl');
  await registerTester(admin);
  const oursKeys = randomSheKeys('ours', KEYS_PER_RUN * (ROUNDS + 2));
  const pgKeys = randomSheKeys('pg', KEYS_PER_RUN * ROUNDS);
  const p0 = performance.now();
  const answers = new EcuAnswers(SHE).add(oursKeys).add(pgKeys);
  note(`ECU answers precomputed for ${answers.size} keys in ${((performance.now() - p0) / 1000).toFixed(1)} s`);
  await importKeys(admin, box, 'ours-batch', oursKeys, master);

  // --- import of a re-order into the real keystore
  note(`import: ${IMPORT_KEYS} keys through import-chunk`);
  const imp: ImportResult = await measureImport(box, REORDER_POOL, IMPORT_KEYS);
  say(`import     ${f1(imp.keysPerS).padStart(8)} keys/s   (${imp.keys} keys in ${imp.chunks} chunks, ${imp.seconds.toFixed(1)} s; batch built in ${imp.buildSeconds.toFixed(1)} s before timing)`);

  await box.keystore.proc.stop();
  const kpgOpts = { dir: path.join(base, 'keystore-pg'), runDir: box.runDir, logDir: box.logDir, boxId: BOX_ID, kmsCa: box.kms.caCert, pools: [POOL], pg: { host: pgs.host, port: pgs.port } };
  let kpg = await startKeystorePg(kpgOpts);
  const pgAdmin = ipcClient(socketPath('keystore', 'pksctl', box.runDir), { timeoutMs: 60_000 });
  cleanups.push(() => pgAdmin.close());
  await registerTester(pgAdmin);
  await importKeys(pgAdmin, box, 'pg-batch', pgKeys, master);
  await kpg.stop();

  const settle = async (): Promise<void> => {
    execFileSync('sync');
    await new Promise((r) => setTimeout(r, 2000));
  };
  const quietPids = Object.fromEntries(quiet.procs.map((p) => [p.name, p.child.pid!]));
  const oursRounds: Round[] = [];
  const pgRounds: Round[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    await box.keystore.restart();
    await settle();
    const o = await httpScenario('ours', { base, box, certs, answers, phase: 10 + r, pids: { vault: box.vault.proc.child.pid!, keystore: box.keystore.proc.child.pid!, ...quietPids } });
    say(loadLine(`ours #${r + 1}`, o.load));
    say(cpuLine(o.metered));
    oursRounds.push(o);
    await box.keystore.proc.stop();

    kpg = await startKeystorePg(kpgOpts);
    await settle();
    const g = await httpScenario('postgres', { base, box, certs, answers, phase: 20 + r, pids: { vault: box.vault.proc.child.pid!, 'keystore-pg': kpg.child.pid!, ...quietPids } });
    say(loadLine(`pg #${r + 1}`, g.load));
    say(cpuLine(g.metered));
    pgRounds.push(g);
    await kpg.stop();
  }
  const median = (rs: Round[]): Round => [...rs].sort((a, b) => a.load.perS - b.load.perS)[Math.floor((rs.length - 1) / 2)]!;
  const medianOf = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
  const ours = median(oursRounds);
  const pgm = median(pgRounds);
  // one tester's figures: the median over the rounds (each round's single-tester run is short)
  const oursOne = { p50: medianOf(oursRounds.map((r) => r.single.p50)), p99: medianOf(oursRounds.map((r) => r.single.p99)) };
  const pgOne = { p50: medianOf(pgRounds.map((r) => r.single.p50)), p99: medianOf(pgRounds.map((r) => r.single.p99)) };
  say(loadLine('ours', ours.load));
  for (const [i, r] of oursRounds.entries()) say(loadLine(`ours x1 #${i + 1}`, r.single));
  say(loadLine('postgres', pgm.load));
  for (const [i, r] of pgRounds.entries()) say(loadLine(`pg x1 #${i + 1}`, r.single));
  const mem = oursRounds.map((r) => r.metered.memory!).reduce((a, b) => (b.totalMb > a.totalMb ? b : a));
  const rss = mem.totalMb;
  say(
    `memory     ${f1(rss)} MB, all five services together from dist/ during the ${CONCURRENCY}-tester load: ${f1(mem.sharedFileMb)} MB of file pages counted once (${mem.method}) + anonymous ${Object.entries(mem.anonMb).map(([n, v]) => `${n} ${f1(v)}`).join(', ')}; the plain VmRSS sum was ${f1(mem.vmRssSumMb)} MB`,
  );

  // --- open loop at fractions of ours' saturation
  await box.keystore.restart();
  await settle();
  const sat = ours.load.perS;
  const open: (OpenLoopResult & { level: number; metered: Metered })[] = [];
  for (const [i, level] of OPEN_LEVELS.entries()) {
    const r = await openScenario({ base, box, certs, answers, phase: 30 + i, rate: sat * level, pids: { vault: box.vault.proc.child.pid!, keystore: box.keystore.proc.child.pid!, ...quietPids } });
    open.push({ ...r, level, metered: r.metered });
    say(loadLine(`open ${Math.round(level * 100)}%`, r) + `  offered ${f1(r.offeredPerS)}/s, ${r.dropped} dropped`);
    say(cpuLine(r.metered));
  }
  const svgFile = path.join(OUT, 'latency-throughput.svg');
  await writeFile(
    svgFile,
    curveSvg(
      `PKS: latency vs throughput, ${CONCURRENCY} testers, ${os.cpus().length} cores (load average ${f1(os.loadavg()[0]!)})`,
      open.map((r) => ({ label: `${Math.round(r.level * 100)}%`, perS: r.perS, p50: r.p50, p99: r.p99 })),
      [
        { label: `ours closed ${CONCURRENCY}`, perS: ours.load.perS, p50: ours.load.p50, p99: ours.load.p99 },
        { label: `postgres closed ${CONCURRENCY}`, perS: pgm.load.perS, p50: pgm.load.p50, p99: pgm.load.p99 },
      ],
    ),
  );
  say(`curve      ${svgFile}`);
  await box.keystore.proc.stop();
  await quiet.stop();
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
  say(`stock      ${f1(small.usPerReserve)} µs/reserve at 10k, ${f1(big.usPerReserve)} µs/reserve at ${large} (median of ${small.rounds.length} alternating rounds; ${large} loaded in ${big.loadSeconds.toFixed(0)} s)   ratio ${stockRatio.toFixed(2)}`);

  const at = (lvl: number): OpenLoopResult => open.find((r) => r.level === lvl)!;
  const vsPg = ours.load.perS / pgm.load.perS;
  const bufRatio = bufL.perS / bufP.perS;
  const vsFloor = ours.load.perS / floorR.perS;
  const loadgen = ours.metered;
  const targets = {
    vs_postgres: vsPg >= 2,
    buffer_vs_postgres: bufRatio >= 5,
    vs_floor: vsFloor >= 0.8,
    single_tester_p50_ms: oursOne.p50 <= 2 && oursOne.p50 < pgOne.p50,
    single_tester_p99_ms: oursOne.p99 <= 5 && oursOne.p99 < pgOne.p99,
    open_loop_p99_ms_at_50: at(0.5).p99 <= 25,
    rss_mb_total: rss <= 300,
    import_keys_per_s: imp.keysPerS >= 250_000,
    stock_10m_vs_10k: stockRatio <= 1.2,
  };
  say(
    `ratios     ours/postgres ${f2(vsPg)} (>= 2)   buffer ${f2(bufRatio)} (>= 5)   ours/floor ${f2(vsFloor)} (>= 0.8)   single p50 ${f2(oursOne.p50)} / p99 ${f2(oursOne.p99)} ms (<= 2 / 5; postgres ${f2(pgOne.p50)} / ${f2(pgOne.p99)})   open 50% p99 ${f1(at(0.5).p99)} ms (<= 25)   rss ${f1(rss)} MB (<= 300)   import ${f1(imp.keysPerS)}/s (>= 250000)   stock ${f2(stockRatio)} (<= 1.2)`,
  );
  say(`targets    ${Object.entries(targets).map(([k, v]) => `${k} ${v ? 'met' : 'MISSED'}`).join(', ')}; total ${((performance.now() - started) / 1000).toFixed(0)} s`);
  // issue 14: unlock tokens (test/bench/unlock.ts)
  const unlockFigures = await unlockBench({ say });
  note('doip: injections per DoIP connection and one ECU\'s time (test/bench/doip.ts)');
  const doip = await benchDoip({ say });
  say(
    JSON.stringify({
      vs_postgres: r2(vsPg),
      buffer_vs_postgres: r2(bufRatio),
      vs_floor: r2(vsFloor),
      single_tester_p50_ms: r2(oursOne.p50),
      single_tester_p99_ms: r2(oursOne.p99),
      postgres_single_p50_ms: r2(pgOne.p50),
      postgres_single_p99_ms: r2(pgOne.p99),
      open_loop_p99_ms_at_25: r2(at(0.25).p99),
      open_loop_p99_ms_at_50: r2(at(0.5).p99),
      open_loop_p99_ms_at_75: r2(at(0.75).p99),
      open_loop_p99_ms_at_90: r2(at(0.9).p99),
      open_loop_per_s: open.map((r) => r2(r.perS)),
      rss_mb_total: r2(rss),
      rss_mb_anon: Object.fromEntries(Object.entries(mem.anonMb).map(([k, v]) => [k, r2(v)])),
      rss_mb_shared_files: r2(mem.sharedFileMb),
      rss_mb_vmrss_sum: r2(mem.vmRssSumMb),
      rss_method: mem.method,
      import_keys_per_s: r2(imp.keysPerS),
      stock_10m_vs_10k: r2(stockRatio),
      stock_size_large: large,
      injections_per_s: r2(ours.load.perS),
      p50_ms: r2(ours.load.p50),
      p99_ms: r2(ours.load.p99),
      postgres_per_s: r2(pgm.load.perS),
      floor_per_s: r2(floorR.perS),
      floor_cores: r2(floorM.loadgenCores),
      flush_p50_ms: r2(flushMs.p50),
      flush_p99_ms: r2(flushMs.p99),
      buffer_lmdb_per_s: r2(bufL.perS),
      buffer_postgres_per_s: r2(bufP.perS),
      loadgen_cpu_share: r2(loadgen.loadgenShare),
      loadgen_cores: r2(loadgen.loadgenCores),
      service_cores: Object.fromEntries(Object.entries(loadgen.serviceCpuS).map(([k, v]) => [k, r2(v / loadgen.wallS)])),
      load_average: r2(os.loadavg()[0]!),
      curve_svg: svgFile,
      testers: CONCURRENCY,
      measure_s: MEASURE_MS / 1000,
      errors: { ours: ours.load.errors, floor: floorR.errors, postgres: pgm.load.errors, open: open.map((r) => r.errors + r.dropped) },
      targets_met: targets,
      ...unlockFigures,
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
