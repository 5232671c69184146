// In-memory limits of the tester API. Token buckets for request rates and reservation quotas
// (one per tester), a sliding window for TLS handshakes (one per source address). All maps are
// bounded: the oldest entry goes first, so nobody can grow our memory by inventing keys.

export type Clock = () => number;

const DEFAULT_MAX_KEYS = 10_000;

/** Map with a size bound: inserting past it evicts the least recently used entry. */
class BoundedMap<K, V> {
  readonly #m = new Map<K, V>();
  constructor(readonly max: number) {}
  get(k: K): V | undefined {
    const v = this.#m.get(k);
    if (v !== undefined) {
      this.#m.delete(k);
      this.#m.set(k, v);
    }
    return v;
  }
  set(k: K, v: V): void {
    this.#m.delete(k);
    this.#m.set(k, v);
    if (this.#m.size > this.max) this.#m.delete(this.#m.keys().next().value as K);
  }
  get size(): number {
    return this.#m.size;
  }
}

interface Bucket {
  tokens: number;
  at: number;
}

/**
 * One token bucket per key: `capacity` tokens, refilled at `perSecond`. take() answers 0 when a
 * token was taken, else the milliseconds until one will be there (for Retry-After).
 */
export class KeyedBuckets {
  readonly #buckets: BoundedMap<string, Bucket>;
  constructor(
    readonly capacity: number,
    readonly perSecond: number,
    readonly now: Clock = Date.now,
    maxKeys = DEFAULT_MAX_KEYS,
  ) {
    this.#buckets = new BoundedMap(maxKeys);
  }

  #bucket(key: string): Bucket {
    const t = this.now();
    let b = this.#buckets.get(key);
    if (!b) {
      b = { tokens: this.capacity, at: t };
      this.#buckets.set(key, b);
    } else if (t > b.at) {
      b.tokens = Math.min(this.capacity, b.tokens + ((t - b.at) / 1000) * this.perSecond);
      b.at = t;
    }
    return b;
  }

  take(key: string): number {
    const b = this.#bucket(key);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - b.tokens) / this.perSecond) * 1000);
  }

  /** Gives back a token taken for something that turned out not to count. */
  refund(key: string): void {
    const b = this.#bucket(key);
    b.tokens = Math.min(this.capacity, b.tokens + 1);
  }
}

/** At most `limit` events per key in any `windowMs`: hit() answers false when over. */
export class SlidingWindow {
  readonly #hits: BoundedMap<string, number[]>;
  constructor(
    readonly limit: number,
    readonly windowMs: number,
    readonly now: Clock = Date.now,
    maxKeys = DEFAULT_MAX_KEYS,
  ) {
    this.#hits = new BoundedMap(maxKeys);
  }

  hit(key: string): boolean {
    const t = this.now();
    let times = this.#hits.get(key);
    if (!times) {
      times = [];
      this.#hits.set(key, times);
    }
    while (times.length > 0 && times[0]! <= t - this.windowMs) times.shift();
    if (times.length >= this.limit) return false;
    times.push(t);
    return true;
  }

  /** True when `key` has used up its events in the current window (counts nothing). */
  over(key: string): boolean {
    const times = this.#hits.get(key);
    if (!times) return false;
    const t = this.now();
    while (times.length > 0 && times[0]! <= t - this.windowMs) times.shift();
    return times.length >= this.limit;
  }
}

/**
 * The reservations each tester made recently (pool + uid), so a retry of one of them is not
 * held up by an exhausted quota: it is not a new key, and the keystore answers it idempotently.
 */
export class RecentReservations {
  readonly #byTester: BoundedMap<string, BoundedMap<string, true>>;
  constructor(
    readonly perTester = 4096,
    maxTesters = 1024,
  ) {
    this.#byTester = new BoundedMap(maxTesters);
  }
  has(tester: string, pool: string, uid: string): boolean {
    return this.#byTester.get(tester)?.get(`${pool}/${uid.toLowerCase()}`) === true;
  }
  add(tester: string, pool: string, uid: string): void {
    let s = this.#byTester.get(tester);
    if (!s) {
      s = new BoundedMap(this.perTester);
      this.#byTester.set(tester, s);
    }
    s.set(`${pool}/${uid.toLowerCase()}`, true);
  }
}
