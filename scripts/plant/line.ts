// A production line: N simulated EOL testers, each with its own mTLS connection, injecting
// SHE keys into simulated ECUs through the tester API, the way a plant line does: ask for the
// package, load it into the ECU, confirm with the ECU's proof. Some ECUs fail on purpose
// (the key is reported failed and burned) and go through rework with a fresh key, on the
// strict SHE simulator, in three kinds (every failEvery-th ECU, in turn):
//   - never loaded: the ECU did not answer CMD_LOAD_KEY; the fresh key loads as usual;
//   - loaded but the proof was lost: the ECU holds the burned key; the fresh package carries a
//     higher SHE counter (services/keystore/counters.ts), so the ECU takes it (rework);
//   - slot already holds a key: an ECU from elsewhere whose slot has a newer key (higher
//     counter) refuses the package with ERC_KEY_UPDATE_ERROR; the key is burned and that ECU
//     leaves the line for analysis (counted in `occupied`, not in `ecus`).
import { randomBytes } from 'node:crypto';
import type { Client } from 'undici';
import { SheEcu } from './ecu-sim.js';
import type { TesterApiHandle, TesterCred } from './tester-api.js';

export interface LinePool {
  pool: string;
  masterKey: Buffer;
}

export interface LineResult {
  ecus: number;
  injected: number;
  verified: number;
  burned: number;
  /** ECUs that loaded a key whose proof was lost and then took the replacement (higher counter) */
  reworked: number;
  /** extra ECUs whose slot already held a newer key: refused by the ECU, key burned */
  occupied: number;
  duplicates: number;
  errors: number;
  p50_ms: number;
  p99_ms: number;
  seconds: number;
  /** packageId → ECU uid, for checks against the KMS */
  issued: Map<string, string>;
  /** ms of every full injection (package + proof), sorted */
  latencies: number[];
}

interface Answer<T> {
  status: number;
  body: T;
}

export async function call<T>(c: Client, method: 'GET' | 'POST', path: string, body?: unknown): Promise<Answer<T>> {
  const r = await c.request({ method, path, headers: body === undefined ? {} : { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const text = await r.body.text();
  return { status: r.statusCode, body: (text ? JSON.parse(text) : {}) as T };
}

export const percentile = (sorted: number[], p: number): number => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]! : 0);

interface Pkg {
  packageId: string;
  m1: string;
  m2: string;
  m3: string;
  code?: string;
}

export async function runLine(o: {
  api: TesterApiHandle;
  testers: TesterCred[];
  pools: LinePool[];
  ecus: number;
  /** every n-th ECU fails its first injection (0: none) */
  failEvery?: number;
  /** stop early when a pool is empty instead of counting errors */
  onEmpty?: 'stop' | 'wait';
  /** called after every injected ECU */
  progress?: (done: number) => void | Promise<void>;
}): Promise<LineResult> {
  const latencies: number[] = [];
  const issued = new Map<string, string>();
  let next = 0;
  let injected = 0;
  let verified = 0;
  let burned = 0;
  let reworked = 0;
  let occupied = 0;
  let duplicates = 0;
  let errors = 0;
  const t0 = Date.now();

  const station = async (tester: TesterCred): Promise<void> => {
    const c = o.api.client(tester);
    while (next < o.ecus) {
      const n = next++;
      const p = o.pools[n % o.pools.length]!;
      const uid = randomBytes(15);
      uid[0] = 0x10; // never the wildcard UID
      const ecu = new SheEcu(uid, p.masterKey);
      const failing = !!o.failEvery && n % o.failEvery === o.failEvery - 1;
      const kind = failing ? Math.floor(n / o.failEvery!) % 3 : -1;
      let failFirst = kind === 0;
      let loseProof = kind === 1;
      let reworkPending = false;
      if (kind === 2) {
        // an ECU whose slot another line already wrote (counter 1000): the strict SHE refuses ours
        const foreign = Buffer.from(uid);
        foreign[1] ^= 0xff;
        const keyId = Number(/(\d+)$/.exec(p.pool)![1]);
        const other = new SheEcu(foreign, p.masterKey, { slots: { [keyId]: { key: randomBytes(16), counter: 1000 } } });
        const r = await call<Pkg>(c, 'POST', '/v1/she/packages', { pool: p.pool, uid: foreign.toString('hex') });
        if (r.status === 200) {
          issued.set(r.body.packageId, foreign.toString('hex'));
          try {
            other.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
          } catch (e) {
            const f = await call<{ state: string }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/fail`, { reason: String((e as Error).message).slice(0, 200) });
            if (f.body.state === 'BURNED') {
              burned++;
              occupied++;
            }
          }
        }
      }
      for (let attempt = 0; attempt < 50; attempt++) {
        const start = performance.now();
        const r = await call<Pkg>(c, 'POST', '/v1/she/packages', { pool: p.pool, uid: uid.toString('hex') });
        if (r.status !== 200) {
          errors++;
          if (r.body.code === 'PKS_POOL_EMPTY' && o.onEmpty === 'wait') {
            await new Promise((res) => setTimeout(res, 200));
            continue;
          }
          if (r.body.code === 'PKS_POOL_EMPTY') return;
          await new Promise((res) => setTimeout(res, 50));
          continue;
        }
        const prior = issued.get(r.body.packageId);
        if (prior && prior !== uid.toString('hex')) duplicates++;
        issued.set(r.body.packageId, uid.toString('hex'));
        if (failFirst) {
          // the ECU did not take the key (contact problem): report it, the key is burned
          failFirst = false;
          const f = await call<{ state: string }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/fail`, { reason: 'ECU did not answer CMD_LOAD_KEY' });
          if (f.body.state === 'BURNED') burned++;
          continue;
        }
        let proof: { m4: Buffer; m5: Buffer };
        try {
          proof = ecu.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
        } catch (e) {
          // the strict SHE refused the package: report it, the key is burned
          errors++;
          const f = await call<{ state: string }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/fail`, { reason: String((e as Error).message).slice(0, 200) });
          if (f.body.state === 'BURNED') burned++;
          continue;
        }
        if (loseProof) {
          // the ECU took the key, but M4/M5 never reached the tester: it reports a failure and
          // the ECU goes round again; the next package must carry a higher counter
          loseProof = false;
          const f = await call<{ state: string }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/fail`, { reason: 'proof lost in transit' });
          if (f.body.state === 'BURNED') burned++;
          failFirst = false;
          reworkPending = true;
          continue;
        }
        const k = await call<{ verified: boolean; state: string }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/confirm`, { m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
        latencies.push(performance.now() - start);
        if (k.status === 200 && k.body.state === 'INJECTED') {
          injected++;
          if (reworkPending) reworked++;
          if (k.body.verified) verified++;
          await o.progress?.(injected);
          break;
        }
        errors++;
      }
    }
  };
  await Promise.all(o.testers.map((t) => station(t)));
  latencies.sort((a, b) => a - b);
  return {
    ecus: o.ecus,
    injected,
    verified,
    burned,
    reworked,
    occupied,
    duplicates,
    errors,
    p50_ms: Number(percentile(latencies, 50).toFixed(2)),
    p99_ms: Number(percentile(latencies, 99).toFixed(2)),
    seconds: (Date.now() - t0) / 1000,
    issued,
    latencies,
  };
}
