// The load driver every scenario shares: N concurrent simulated testers, each running one
// full injection after the other; after a warm-up, completed injections are counted over a
// fixed window and their latencies kept for percentiles.

export interface LoadResult {
  count: number;
  seconds: number;
  perS: number;
  p50: number;
  p99: number;
  errors: number;
  firstError?: string;
}

export interface LoadOptions {
  concurrency: number;
  warmupMs: number;
  measureMs: number;
  /** one full injection by tester w; resolves when the proof is confirmed */
  inject(w: number): Promise<void>;
  /** mean pause between a tester's injections (the ECU's own work), not counted as latency */
  thinkMs?: number;
}

/** Stops on the first PKS_POOL_EMPTY (the pool was sized too small) or after the window. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const lat: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const from = t0 + o.warmupMs;
  const to = from + o.measureMs;
  let count = 0;
  let stopAt = to;
  const worker = async (w: number): Promise<void> => {
    while (performance.now() < stopAt) {
      const s = performance.now();
      try {
        await o.inject(w);
      } catch (e) {
        errors++;
        firstError ??= `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`.trim();
        if (/POOL_EMPTY/.test(firstError)) stopAt = 0;
        if (errors > 100) stopAt = 0;
        continue;
      }
      const e = performance.now();
      if (e >= from && e <= to) {
        count++;
        lat.push(e - s);
      }
      if (o.thinkMs) await new Promise((r) => setTimeout(r, o.thinkMs! * (0.5 + Math.random())));
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, (_, w) => worker(w)));
  const seconds = (Math.min(performance.now(), to) - from) / 1000;
  lat.sort((a, b) => a - b);
  const pct = (q: number): number => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]! : NaN);
  return { count, seconds, perS: seconds > 0 ? count / seconds : 0, p50: pct(0.5), p99: pct(0.99), errors, ...(firstError ? { firstError } : {}) };
}

/** Distinct 15-byte ECU UIDs: a phase tag in the top byte, a counter below. */
export function uidMaker(phase: number): () => string {
  let n = 0;
  return () => (phase.toString(16).padStart(2, '0') + (++n).toString(16).padStart(28, '0'));
}
