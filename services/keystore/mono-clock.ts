// Keystore time that never jumps with the wall clock: the age of a reservation (the sweep's
// TTL) and the hourly quotas are measured on it. It is monotonic process time added to the
// value persisted in the store, so a restart continues where it stopped; time the keystore did
// not run does not count (a box switched off over the weekend burns nothing while off). An NTP
// step after an RTC reset moves Date.now(), not this clock.
import type { Dbs } from './db.js';

const KEY = 'mono-ms';

export class MonoClock {
  private readonly base: number;
  private readonly start: number;

  constructor(dbs: Dbs, private readonly hr: () => number = () => performance.now()) {
    this.base = (dbs.meta.get(KEY) as number | undefined) ?? 0;
    this.start = hr();
  }

  now(): number {
    return this.base + Math.max(0, this.hr() - this.start);
  }
}

/** Persists a reading (inside a write transaction): after a crash the clock resumes at or after it. */
export function persistMono(dbs: Dbs, t: number): void {
  const cur = (dbs.meta.get(KEY) as number | undefined) ?? 0;
  if (t > cur) dbs.meta.putSync(KEY, t);
}
