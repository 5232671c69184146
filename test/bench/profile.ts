// Where an injection's time goes: the services under `node --cpu-prof`, one tester alone and
// then 64 in a closed loop, and a summary of every profile (self time by package and the
// hottest functions). `node --import tsx test/bench/profile.ts [seconds] [1|64|both|parts|import]`
// (import: seconds × 50,000 keys through import-chunk); the profiles stay in the printed
// directory (open them in Chrome DevTools).
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { LOAD_QUOTAS, startBox } from '../../scripts/plant/box.js';
import { httpInjection, testerPool } from './flow.js';
import { ipcClient } from '../../appliance/ipc.js';
import { socketPath } from '../../appliance/paths.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { openDbs } from '../../services/keystore/db.js';
import { measureImport } from './import.js';
import { runLoad, uidMaker } from './load.js';
import { makeCerts, startTesterApi, TESTER } from './stack.js';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

/** self time per package / area and the top functions of one .cpuprofile */
export function summarize(p: Profile, top = 12): { totalMs: number; byArea: [string, number][]; byFn: [string, number][] } {
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const area = (n: Node): string => {
    const { url, functionName } = n.callFrame;
    if (!url) return functionName.startsWith('(') ? functionName : '(native)';
    const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
    if (nm) return nm[1]!;
    if (url.startsWith('node:')) return url.replace(/^node:(internal\/)?/, 'node:').split('/').slice(0, 2).join('/');
    const ours = /\/((?:appliance|services|scripts|test)\/.*)$/.exec(url);
    return ours ? ours[1]!.replace(/\.(ts|js)$/, '') : url;
  };
  const areas = new Map<string, number>();
  const fns = new Map<string, number>();
  let total = 0;
  for (const [id, ms] of self) {
    const n = byId.get(id)!;
    total += ms;
    const a = area(n);
    areas.set(a, (areas.get(a) ?? 0) + ms);
    const f = `${n.callFrame.functionName || '(anonymous)'} ${a}:${n.callFrame.lineNumber + 1}`;
    fns.set(f, (fns.get(f) ?? 0) + ms);
  }
  const sort = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return { totalMs: total, byArea: sort(areas), byFn: sort(fns) };
}

async function main(): Promise<void> {
  const seconds = Number(process.argv[2] ?? 6);
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-prof-'));
  const profDir = path.join(base, 'profiles');
  await mkdir(profDir, { recursive: true });
  // as root the vault and keystore run as their own users (as on the box): they must reach and
  // write the profile folder, or node --cpu-prof drops their profiles without a word
  await chmod(base, 0o711);
  await chmod(profDir, 0o1777);
  process.env.PKS_NODE_ARGS = `--cpu-prof --cpu-prof-dir=${profDir}`;
  const pool = 'oem1.prof.4';
  const names = new Map<number, string>();
  const master = randomBytes(16);
  const box = await startBox({ base: path.join(base, 'box'), boxId: 'box-prof-1', pools: [{ pool, minimum: 1, reorder: 1 }], quotas: LOAD_QUOTAS });
  try {
    const admin = box.keystore.client('pksctl');
    await admin.call('tester-put', { cn: TESTER, station: 'prof', pools: [pool], expiresAt: new Date(Date.now() + 86_400_000).toISOString(), revoked: false });
    for (const chunk of box.batch('prof-batch', { pool, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys('prof', 60_000) })) await admin.call('import-chunk', { chunk }, 60_000);
    const certs = await makeCerts(path.join(base, 'certs'));
    const api = await startTesterApi({ dir: path.join(base, 'api'), runDir: box.runDir, logDir: box.logDir, certs, name: 'tester-api' });
    names.set(box.vault.proc.child.pid!, 'vault');
    names.set(box.keystore.proc.child.pid!, 'keystore');
    names.set(api.proc.child.pid!, 'tester-api');
    const tp = testerPool(api.port, certs.tester, 64);
    const next = uidMaker(0x70);
    const mode = process.argv[3] ?? 'both';
    if (mode === 'import') {
      const r = await measureImport(box, pool, seconds * 50_000);
      console.log(`import: ${r.keysPerS.toFixed(0)} keys/s (${r.keys} keys in ${r.chunks} chunks, ${r.seconds.toFixed(1)} s)`);
    }
    if (mode === 'parts') await parts({ base, runDir: box.runDir, tp, pool, master });
    if (mode === 'both' || mode === '1') {
      const one = await runLoad({ concurrency: 1, warmupMs: 1000, measureMs: seconds * 1000, inject: httpInjection(tp, pool, master, next) });
      console.log(`one tester: ${one.perS.toFixed(0)}/s p50 ${one.p50.toFixed(2)} ms p99 ${one.p99.toFixed(2)} ms`);
    }
    if (mode === 'both' || mode === '64') {
      const many = await runLoad({ concurrency: 64, warmupMs: 1000, measureMs: seconds * 1000, inject: httpInjection(tp, pool, master, next) });
      console.log(`64 testers: ${many.perS.toFixed(0)}/s p50 ${many.p50.toFixed(2)} ms p99 ${many.p99.toFixed(2)} ms, ${many.errors} errors${many.firstError ? ` (first: ${many.firstError})` : ''}`);
    }
    await tp.destroy();
    await api.proc.stop();
  } finally {
    await box.stop();
  }
  // main threads only (tsx runs a loader thread beside each)
  for (const f of (await readdir(profDir)).filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))) {
    const pid = Number(f.split('.')[3]);
    const s = summarize(JSON.parse(await readFile(path.join(profDir, f), 'utf8')) as Profile);
    console.log(`\n${names.get(pid) ?? 'other'} (${f}): ${(s.totalMs / 1000).toFixed(1)} s sampled`);
    for (const [a, ms] of s.byArea) console.log(`  ${((100 * ms) / s.totalMs).toFixed(1).padStart(5)} %  ${a}`);
    console.log('  hottest:');
    for (const [fn, ms] of s.byFn) console.log(`  ${((100 * ms) / s.totalMs).toFixed(1).padStart(5)} %  ${fn}`);
  }
  console.log(`\nprofiles in ${profDir}`);
}

const pct = (xs: number[], q: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
async function timed(n: number, fn: (i: number) => Promise<unknown> | unknown): Promise<string> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await fn(i);
    xs.push(performance.now() - s);
  }
  return `p50 ${pct(xs, 0.5).toFixed(3)} ms  p99 ${pct(xs, 0.99).toFixed(3)} ms`;
}

/** Each part of one injection alone, serially: what one tester's round trip is made of. */
async function parts(o: { base: string; runDir: string; tp: ReturnType<typeof testerPool>; pool: string; master: Buffer }): Promise<void> {
  const N = 400;
  const get = async (): Promise<void> => {
    const r = await o.tp.request({ method: 'GET', path: '/v1/health' });
    await r.body.text();
  };
  await get();
  console.log(`part https GET /v1/health (mTLS keep-alive, cached tester):  ${await timed(N, get)}`);
  const ks = ipcClient(socketPath('keystore', 'pksctl', o.runDir));
  const vault = ipcClient(socketPath('vault', 'pksctl', o.runDir));
  await ks.call('stats');
  console.log(`part ipc keystore stats:                                    ${await timed(N, () => ks.call('stats'))}`);
  console.log(`part ipc vault status:                                      ${await timed(N, () => vault.call('status'))}`);
  // reserve + ECU + confirm straight on the keystore's tester-api socket: no HTTPS, no tester API
  const api = ipcClient(socketPath('keystore', 'tester-api', o.runDir));
  const next = uidMaker(0x71);
  let ecuMs = 0;
  let resvMs = 0;
  let confMs = 0;
  for (let i = 0; i < N; i++) {
    const uid = next();
    const t0 = performance.now();
    const p = await api.call<{ packageId: string; m1: string; m2: string; m3: string }>('reserve', { pool: o.pool, uid, tester: TESTER, station: 'prof' });
    const t1 = performance.now();
    const proof = new SheEcu(Buffer.from(uid, 'hex'), o.master).loadKey(Buffer.from(p.m1, 'hex'), Buffer.from(p.m2, 'hex'), Buffer.from(p.m3, 'hex'));
    const t2 = performance.now();
    await api.call('confirm', { packageId: p.packageId, tester: TESTER, m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
    resvMs += t1 - t0;
    ecuMs += t2 - t1;
    confMs += performance.now() - t2;
  }
  console.log(`part keystore reserve (tx, flush, vault she-prepare), mean: ${(resvMs / N).toFixed(3)} ms`);
  console.log(`part ECU simulation (in the load generator), mean:          ${(ecuMs / N).toFixed(3)} ms`);
  console.log(`part keystore confirm (vault she-verify, tx, flush), mean:  ${(confMs / N).toFixed(3)} ms`);
  const dbs = openDbs(path.join(o.base, 'probe-lmdb'), { mapSizeMb: 256 });
  console.log(`part lmdb durable put + flushed, serial:                    ${await timed(N, async (i) => {
    await dbs.meta.put(`k${i}`, i);
    await dbs.root.flushed;
  })}`);
  await dbs.root.close();
  await Promise.all([ks.close(), vault.close(), api.close()]);
}

if (process.argv[1]?.endsWith('profile.ts')) await main();
