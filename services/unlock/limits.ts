// Per-user rate limits as GCRA (the generic cell rate algorithm): one "theoretical arrival
// time" per user, so a limit costs one number per user and no timer. Users are few (people, not
// machines); the map is capped anyway, oldest entry out, so no one grows it by inventing names.

export class Gcra {
  readonly #tat = new Map<string, number>();
  readonly #interval: number;
  readonly #tolerance: number;

  /** `perSecond` sustained, `burst` at once. */
  constructor(perSecond: number, burst: number, private readonly now: () => number = Date.now, private readonly maxKeys = 4096) {
    this.#interval = 1000 / perSecond;
    this.#tolerance = this.#interval * Math.max(0, burst - 1);
  }

  /** 0 when allowed (and counted), else the milliseconds until it would be. */
  take(key: string): number {
    const t = this.now();
    const tat = Math.max(this.#tat.get(key) ?? t, t);
    const wait = tat - this.#tolerance - t;
    if (wait > 0) return Math.ceil(wait);
    this.#tat.delete(key);
    this.#tat.set(key, tat + this.#interval);
    if (this.#tat.size > this.maxKeys) this.#tat.delete(this.#tat.keys().next().value as string);
    return 0;
  }
}
