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

export interface OpenLoopResult extends LoadResult {
  /** arrivals per second asked for */
  offeredPerS: number;
  /** arrivals that found more than `maxInFlight` in flight and were not sent */
  dropped: number;
}

/**
 * Open loop: arrivals at a fixed rate, whatever the box does, as stations on a line would
 * come (a closed loop slows its own arrivals down when the box is slow and so hides its
 * queue). Latency counts from the arrival's scheduled time, so a late start is included.
 */
export async function runOpenLoop(o: { ratePerS: number; warmupMs: number; measureMs: number; testers: number; maxInFlight?: number; inject(w: number): Promise<void> }): Promise<OpenLoopResult> {
  const lat: number[] = [];
  const gap = 1000 / o.ratePerS;
  const t0 = performance.now();
  const from = t0 + o.warmupMs;
  const to = from + o.measureMs;
  const cap = o.maxInFlight ?? 4096;
  let k = 0;
  let inFlight = 0;
  let count = 0;
  let errors = 0;
  let dropped = 0;
  let firstError: string | undefined;
  const running = new Set<Promise<void>>();
  const fire = (due: number, w: number): void => {
    if (inFlight >= cap) {
      if (due >= from && due <= to) dropped++;
      return;
    }
    inFlight++;
    const p = o.inject(w).then(
      () => {
        const e = performance.now();
        if (due >= from && due <= to) {
          count++;
          lat.push(e - due);
        }
      },
      (e: unknown) => {
        errors++;
        firstError ??= `${(e as { code?: string }).code ?? ''} ${(e as Error).message}`.trim();
      },
    );
    const tracked = p.finally(() => {
      inFlight--;
      running.delete(tracked);
    });
    running.add(tracked);
  };
  while (performance.now() < to) {
    const now = performance.now();
    for (; t0 + k * gap <= now; k++) fire(t0 + k * gap, k % o.testers);
    await new Promise((r) => setTimeout(r, Math.max(0, Math.min(5, t0 + k * gap - performance.now()))));
  }
  await Promise.all(running);
  lat.sort((a, b) => a - b);
  const pct = (q: number): number => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(q * lat.length))]! : NaN);
  const seconds = o.measureMs / 1000;
  return { count, seconds, perS: count / seconds, p50: pct(0.5), p99: pct(0.99), errors, offeredPerS: o.ratePerS, dropped, ...(firstError ? { firstError } : {}) };
}
