// Time warp for the plant-fault tests, preloaded into a service process (node --import this
// file, through $PKS_NODE_ARGS): the wall clock (Date) runs ahead by the number of
// milliseconds in the file $PKS_WARP_FILE, re-read every 50 ms, so a test moves every process
// of a stack 72 hours ahead together while they run. Monotonic time (performance.now, timers)
// is left alone: only what the services read as the date moves. Plain JS: it loads before tsx.
import { readFileSync } from 'node:fs';

const file = process.env.PKS_WARP_FILE;
if (file) {
  let offset = 0;
  const read = () => {
    try {
      offset = Number(readFileSync(file, 'utf8').trim()) || 0;
    } catch {
      /* keep the last offset */
    }
  };
  read();
  setInterval(read, 50).unref();
  const Real = Date;
  class WarpDate extends Real {
    constructor(...a) {
      if (a.length === 0) super(Real.now() + offset);
      else super(...a);
    }
    static now() {
      return Real.now() + offset;
    }
    // dates made by native code (fs, crypto) are still dates
    static [Symbol.hasInstance](x) {
      return x instanceof Real;
    }
  }
  globalThis.Date = WarpDate;
}
