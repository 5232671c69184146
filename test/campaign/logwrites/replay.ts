// Crash states from a dm-log-writes log (format.ts): the device as power loss could have left it.
// The log holds the writes in completion order, each FLUSH after the writes it made durable. A
// state is the starting image, every entry up to a durable point `a` (a FLUSH or FUA entry), and
// some of the writes logged between `a` and the next durable point `b`, which were still in the
// disk's volatile cache: none of them (the state at `a`), a prefix (power lost while they went
// out in order), or any subset (the cache wrote them back in another order). `b` itself is not
// in a state of that interval (its data, a journal commit block, is the next state's).
//
// What the testers were told is in the log as MARKs. Every answer left the box after the flush
// that made its records durable (invariant 1), so that flush lies before the mark and at or
// before the last durable point ahead of it: any state of an interval must show every answer
// marked before the interval's end `b`. A box that answered before its flush would have the
// mark ahead of the flush and fail in the states between.
import { closeSync, copyFileSync, fstatSync, ftruncateSync, openSync, readSync, writeSync } from 'node:fs';
import { rng as xorshift } from '../fuzz/engine.js';
import { DISCARD, MARK, isDurablePoint, type LogEntry, type WriteLog } from './format.js';

export type StateKind = 'durable' | 'prefix' | 'subset' | 'end';

export interface CrashState {
  /** every entry with index <= base is applied (-1: the starting image) */
  base: number;
  /** writes of (base, bound) applied on top, in log order */
  extra: number[];
  /** the next durable point (the log's length for the tail) */
  bound: number;
  kind: StateKind;
}

export interface PlanOptions {
  /** states cut inside each interval between durable points that has writes in it */
  samplesPerInterval: number;
  /** power lost after every single write: every prefix of every interval, the samples are then subsets */
  everyWrite?: boolean;
  /** seed of the sampling (states are reproducible) */
  seed: number;
  /** only states whose interval ends at or after this entry (e.g. the "start" mark) */
  from?: number;
}

/** uniform in [0, 1), seeded: the fuzz engine's xorshift32 */
export function rng(seed: number): () => number {
  const next = xorshift(seed);
  return () => next() / 0x1_0000_0000;
}

const isWrite = (e: LogEntry): boolean => !(e.flags & MARK);

/** The durable points of the log: indexes of FLUSH/FUA entries. */
export const durablePoints = (log: WriteLog): number[] => log.entries.filter(isDurablePoint).map((e) => e.index);

/**
 * Every durable point's state plus up to `samplesPerInterval` distinct cuts inside each interval
 * that has writes (alternately a prefix and a random subset of them; with `everyWrite` every
 * prefix and the samples subsets), in log order; the starting image first (a durable state
 * with base -1) and the whole log last.
 */
export function planStates(log: WriteLog, o: PlanOptions): CrashState[] {
  const rand = rng(o.seed);
  const points = durablePoints(log);
  const n = log.entries.length;
  const bounds = [...points, n];
  const states: CrashState[] = [];
  let base = -1;
  for (const bound of bounds) {
    if (bound >= (o.from ?? 0)) {
      states.push({ base, extra: [], bound, kind: 'durable' });
      const writes: number[] = [];
      for (let i = base + 1; i < bound; i++) if (isWrite(log.entries[i]!)) writes.push(i);
      // distinct states only: a short interval has fewer cuts than asked for
      const seen = new Set<string>();
      if (o.everyWrite) {
        for (let k = 1; k <= writes.length; k++) {
          const extra = writes.slice(0, k);
          seen.add(extra.join(','));
          states.push({ base, extra, bound, kind: 'prefix' });
        }
      }
      for (let s = 0; s < o.samplesPerInterval && writes.length > 0; s++) {
        let extra: number[];
        let kind: StateKind;
        if ((s % 2 === 0 && !o.everyWrite) || writes.length === 1) {
          // a prefix: 1..all of them
          extra = writes.slice(0, 1 + Math.floor(rand() * writes.length));
          kind = 'prefix';
        } else {
          extra = writes.filter(() => rand() < 0.5);
          if (!extra.length) extra.push(writes[Math.floor(rand() * writes.length)]!);
          // in log order, the writes of a prefix are a prefix whatever the draw
          kind = extra.every((v, i) => v === writes[i]) ? 'prefix' : 'subset';
        }
        const key = extra.join(',');
        if (seen.has(key)) continue;
        seen.add(key);
        states.push({ base, extra, bound, kind });
      }
      // the log's end: every write after the last durable point too (the state a clean stop leaves)
      if (bound === n && writes.length && !seen.has(writes.join(','))) states.push({ base, extra: writes, bound, kind: 'end' });
    }
    base = bound;
  }
  return states;
}

const CHUNK = 1 << 20;
const BLOCK = 4096;

/**
 * A working image on which the log is applied in order; a state is a scratch file made from it:
 * the blocks that hold anything (from the starting image or written by the log, tracked here)
 * copied into an empty sparse file, the state's extra writes applied there. The image is most
 * holes, so this costs a few MiB per state, not the device's size.
 */
export class Replayer {
  private readonly logFd: number;
  private readonly workFd: number;
  private applied = -1;
  private readonly buf = Buffer.alloc(CHUNK);
  private readonly size: number;
  /** 4 KiB blocks of the working image that are not a hole */
  private readonly used: Uint8Array;

  constructor(
    readonly log: WriteLog,
    logFile: string,
    initialImage: string,
    readonly workImage: string,
  ) {
    copyFileSync(initialImage, workImage);
    this.logFd = openSync(logFile, 'r');
    this.workFd = openSync(workImage, 'r+');
    this.size = fstatSync(this.workFd).size;
    this.used = new Uint8Array(Math.ceil(this.size / BLOCK));
    const zero = Buffer.alloc(BLOCK);
    for (let off = 0; off < this.size; off += CHUNK) {
      const n = readSync(this.workFd, this.buf, 0, Math.min(CHUNK, this.size - off), off);
      for (let i = 0; i < n; i += BLOCK) if (!this.buf.subarray(i, i + BLOCK).equals(zero.subarray(0, Math.min(BLOCK, n - i)))) this.used[(off + i) / BLOCK] = 1;
    }
  }

  /** index of the last entry applied to the working image */
  get position(): number {
    return this.applied;
  }

  /** Applies entries up to and including `index` to the working image. */
  advanceTo(index: number): void {
    if (index < this.applied) throw new Error(`replay cannot go back from ${this.applied} to ${index}`);
    while (this.applied < index) {
      const e = this.log.entries[++this.applied]!;
      this.applyTo(this.workFd, e);
      if (!(e.flags & (MARK | DISCARD))) {
        const ss = this.log.sectorSize;
        for (let b = Math.floor((e.sector * ss) / BLOCK); b * BLOCK < (e.sector + e.nrSectors) * ss; b++) this.used[b] = 1;
      }
    }
  }

  /** Writes one entry's data (zeros for a discard) to the image behind `fd`. */
  applyTo(fd: number, e: LogEntry): void {
    if (e.flags & MARK || e.nrSectors === 0) return;
    const ss = this.log.sectorSize;
    if ((e.sector + e.nrSectors) * ss > this.size) throw new Error(`entry ${e.index} writes past the device's end`);
    let left = e.nrSectors * ss;
    let src = e.dataOffset;
    let dst = e.sector * ss;
    const discard = (e.flags & DISCARD) !== 0;
    if (discard) this.buf.fill(0);
    while (left > 0) {
      const len = Math.min(left, CHUNK);
      if (!discard && readSync(this.logFd, this.buf, 0, len, src) !== len) throw new Error(`entry ${e.index}: short read from the log`);
      writeSync(fd, this.buf, 0, len, dst);
      left -= len;
      src += len;
      dst += len;
    }
  }

  /** The state as a file of its own at `scratch`: the working image advanced to its base, copied, its extra writes applied. */
  materialise(s: CrashState, scratch: string): void {
    this.advanceTo(s.base);
    const fd = openSync(scratch, 'w');
    try {
      ftruncateSync(fd, this.size);
      const blocks = this.used.length;
      for (let b = 0; b < blocks; ) {
        if (!this.used[b]) {
          b++;
          continue;
        }
        let e = b;
        while (e < blocks && this.used[e] && (e - b + 1) * BLOCK <= CHUNK) e++;
        const off = b * BLOCK;
        const len = Math.min((e - b) * BLOCK, this.size - off);
        readSync(this.workFd, this.buf, 0, len, off);
        writeSync(fd, this.buf, 0, len, off);
        b = e;
      }
      for (const i of s.extra) this.applyTo(fd, this.log.entries[i]!);
    } finally {
      closeSync(fd);
    }
  }

  close(): void {
    closeSync(this.logFd);
    closeSync(this.workFd);
  }
}
