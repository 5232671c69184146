// The memory a set of processes takes together. Summing VmRSS counts each page of
// /usr/bin/node, libc and every shared library once per service (about 40 MB a process here),
// and PSS would split those pages with whatever else runs node on the machine (the load
// generator, the KMS, the baseline), so neither says what the box's services cost.
// What is counted instead: each process's anonymous pages (its heaps, private and never
// shared between these unrelated processes), plus the physical file pages they map, each
// page once however many of them map it (/proc/PID/pagemap, by frame number).
// Frame numbers need CAP_SYS_ADMIN; without it the file pages fall back to PSS.
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';

const PAGE = 4096;
const SLICE_PAGES = 65_536;
const PRESENT = 1n << 63n;
const FILE_OR_SHARED = 1n << 61n;
const PFN_MASK = (1n << 55n) - 1n;

export interface Memory {
  /** anonymous pages of all + their file pages counted once, MB */
  totalMb: number;
  /** the plain sum of VmRSS, MB: what `ps` adds up to */
  vmRssSumMb: number;
  /** the file pages counted once, MB (node, shared libraries, native addons) */
  sharedFileMb: number;
  /** each process: its anonymous memory, MB */
  anonMb: Record<string, number>;
  /** how the file pages were counted: by frame number, or PSS where frames are hidden */
  method: 'pagemap' | 'pss';
}

function kb(text: string, key: string): number {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/**
 * Adds the frame numbers of the present file pages `pid` maps to `into`; false when the kernel
 * hides them or the page map cannot be read (the process is gone, or not ours to read).
 */
function filePages(pid: number, into: Set<bigint>): boolean {
  let maps: string;
  let fd: number;
  try {
    maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    fd = openSync(`/proc/${pid}/pagemap`, 'r');
  } catch {
    return false;
  }
  let sawFrame = false;
  let sawPresent = false;
  // read in slices: the keystore maps its whole LMDB map size (GBs) from one file
  const buf = Buffer.alloc(SLICE_PAGES * 8);
  try {
    for (const line of maps.split('\n')) {
      const f = line.split(/\s+/);
      if (f.length < 6 || !f[5]!.startsWith('/')) continue;
      const [lo, hi] = f[0]!.split('-').map((h) => parseInt(h, 16) / PAGE) as [number, number];
      for (let at = lo; at < hi; at += SLICE_PAGES) {
        const n = readSync(fd, buf, 0, Math.min(SLICE_PAGES, hi - at) * 8, at * 8);
        const words = new BigUint64Array(buf.buffer, buf.byteOffset, Math.floor(n / 8));
        for (const w of words) {
          if (!(w & PRESENT)) continue;
          sawPresent = true;
          const pfn = w & PFN_MASK;
          if (pfn !== 0n) sawFrame = true;
          // a private file mapping's written (copied) pages are anonymous: counted with Anonymous
          if (w & FILE_OR_SHARED) into.add(pfn);
        }
      }
    }
  } catch {
    return false;
  } finally {
    closeSync(fd);
  }
  return !sawPresent || sawFrame;
}

/** What the processes in `pids` take together right now (a process that is gone counts 0). */
export function memoryOf(pids: Record<string, number>): Memory {
  const frames = new Set<bigint>();
  const anonMb: Record<string, number> = {};
  let vmRss = 0;
  let pssFile = 0;
  let hidden = false;
  for (const [name, pid] of Object.entries(pids)) {
    let roll: string;
    try {
      roll = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    } catch {
      anonMb[name] = 0;
      continue;
    }
    anonMb[name] = kb(roll, 'Anonymous') / 1024;
    vmRss += kb(roll, 'Rss') / 1024;
    pssFile += kb(roll, 'Pss_File') / 1024;
    if (!hidden) hidden = !filePages(pid, frames);
  }
  const anon = Object.values(anonMb).reduce((a, b) => a + b, 0);
  const sharedFileMb = hidden ? pssFile : (frames.size * PAGE) / 2 ** 20;
  return { totalMb: anon + sharedFileMb, vmRssSumMb: vmRss, sharedFileMb, anonMb, method: hidden ? 'pss' : 'pagemap' };
}
