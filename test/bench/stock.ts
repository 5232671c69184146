// What a reservation costs as stock grows: the same durable reserve (reserveTx in one LMDB
// write transaction, then `flushed`), 64 at a time, against pools of different sizes. Stock is
// written straight into LMDB with addAvailable in big transactions; the ciphertexts are dummies
// because nothing here asks the vault. The sizes are measured in alternating rounds and
// compared by their median round, so drift in the disk's fsync time (large on a shared VM)
// hits both sizes alike instead of whichever ran second.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { openDbs, type Dbs } from '../../services/keystore/db.js';
import { addAvailable, isRefusal, reserveTx } from '../../services/keystore/stock.js';

export interface StockResult {
  size: number;
  reserves: number;
  loadSeconds: number;
  /** microseconds per reserve (median round), at `concurrency` in flight */
  usPerReserve: number;
  rounds: number[];
}

const POOL = 'oem1.stock.4';
const LOAD_TX = 100_000;
const ROUNDS = 5;

async function load(dbs: Dbs, total: number, log?: (s: string) => void): Promise<number> {
  await dbs.pools.put(POOL, { pool: POOL, minimum: 0, reorder: 1, critical: 0 });
  // the reservation takes its SHE counter from the batch (counters.ts): the batch must be on record
  await dbs.batches.put('stock-batch', { batchId: 'stock-batch', pool: POOL, chunks: 1, total, batchKey: randomBytes(40), epk: '', she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0, auth: randomBytes(48) }, seen: [0], imported: total, complete: true, createdAt: Date.now() });
  const ct = randomBytes(48);
  const t0 = performance.now();
  let lastLog = t0;
  for (let done = 0; done < total; ) {
    const n = Math.min(LOAD_TX, total - done);
    const recs: [string, Buffer][] = new Array(n);
    for (let i = 0; i < n; i++) recs[i] = [`stock-${String(done + i).padStart(9, '0')}`, ct];
    dbs.root.transactionSync(() => addAvailable(dbs, POOL, 'stock-batch', recs));
    done += n;
    if (log && performance.now() - lastLog > 15_000) {
      lastLog = performance.now();
      log(`stock load ${done}/${total} (${((lastLog - t0) / 1000).toFixed(0)} s)`);
    }
  }
  await dbs.root.flushed;
  return (performance.now() - t0) / 1000;
}

let uidSeq = 0;
/** `n` durable reserves, `concurrency` at a time; microseconds per reserve. */
async function reserveRound(dbs: Dbs, n: number, concurrency: number): Promise<number> {
  let issued = 0;
  const one = async (w: number): Promise<void> => {
    const uid = (0x5000_0000 + ++uidSeq).toString(16).padStart(30, '0');
    const r = await dbs.root.transaction(() => reserveTx(dbs, Date.now(), { pool: POOL, uid, tester: `t${w}`, station: `s${w}` }));
    await dbs.root.flushed;
    if (isRefusal(r)) throw new Error(`reserve refused: ${r.refused} ${r.detail}`);
  };
  const s = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      while (issued < n) {
        issued++;
        await one(w);
      }
    }),
  );
  return ((performance.now() - s) * 1000) / n;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function stockCost(o: { dir: string; sizes: number[]; reserves: number; concurrency: number; log?: (s: string) => void }): Promise<StockResult[]> {
  const envs = o.sizes.map((size) => ({ size, dbs: openDbs(path.join(o.dir, `stock-${size}`), { mapSizeMb: 64 * 1024 }), loadSeconds: 0, rounds: [] as number[] }));
  try {
    // reserves come out of the stock, so each pool gets them on top: it holds at least `size`
    // keys through the whole measurement
    for (const e of envs) e.loadSeconds = await load(e.dbs, e.size + o.reserves + o.concurrency, o.log);
    for (const e of envs) await reserveRound(e.dbs, o.concurrency, o.concurrency); // warm pages and JIT
    const per = Math.floor(o.reserves / ROUNDS);
    for (let r = 0; r < ROUNDS; r++) for (const e of r % 2 ? [...envs].reverse() : envs) e.rounds.push(await reserveRound(e.dbs, per, o.concurrency));
    return envs.map((e) => ({ size: e.size, reserves: per * ROUNDS, loadSeconds: e.loadSeconds, usPerReserve: median(e.rounds), rounds: e.rounds }));
  } finally {
    for (const e of envs) await e.dbs.root.close();
  }
}
