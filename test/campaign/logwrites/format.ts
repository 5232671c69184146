// The on-disk format of the kernel's dm-log-writes target (drivers/md/dm-log-writes.c,
// Documentation/admin-guide/device-mapper/log-writes.rst), read and written here:
//   sector 0:  super  { le64 magic 0x6a736677736872, le64 version 1, le64 nr_entries, le32 sectorsize }
//   then nr_entries times, from byte `sectorsize` on:
//              one sector  { le64 sector, le64 nr_sectors, le64 flags, le64 data_len } (+ a mark's text)
//              nr_sectors * sectorsize bytes of data (none for a DISCARD)
// `sector` and `nr_sectors` count in the data device's logical sectors (`sectorsize`). Writes are
// in the log in the order they completed, those before a FLUSH ahead of it; a MARK is text
// userspace put in (`dmsetup message DEV 0 mark TEXT`, at most sectorsize-33 bytes).
import { closeSync, openSync, readSync, writeSync } from 'node:fs';

export const LOG_MAGIC = 0x6a736677736872n;
export const LOG_VERSION = 1n;
export const FLUSH = 1;
export const FUA = 2;
export const DISCARD = 4;
export const MARK = 8;
export const METADATA = 16;
const ENTRY_HEAD = 32;

export interface LogEntry {
  /** position in the log, from 0 */
  index: number;
  /** on the data device, in sectors of `sectorsize` */
  sector: number;
  nrSectors: number;
  flags: number;
  /** byte offset of the data in the log file (meaningless for a discard or a mark) */
  dataOffset: number;
  /** a MARK's text */
  mark?: string;
}

export interface WriteLog {
  sectorSize: number;
  entries: LogEntry[];
  /** bytes of the log file the entries cover */
  end: number;
}

export class LogFormatError extends Error {}

const u64 = (b: Buffer, at: number, what: string): number => {
  const v = b.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LogFormatError(`${what} ${v} is out of range`);
  return Number(v);
};

/**
 * Reads the entry index of a log file (headers only; data stays in the file, `dataOffset` says
 * where). A log the kernel never finished (super block not written since the last entries)
 * yields the entries its super counts; an entry that runs past the file is an error.
 */
export function readLog(file: string): WriteLog {
  const fd = openSync(file, 'r');
  try {
    const sup = Buffer.alloc(28);
    if (readSync(fd, sup, 0, 28, 0) !== 28) throw new LogFormatError('log shorter than its super block');
    if (sup.readBigUInt64LE(0) !== LOG_MAGIC) throw new LogFormatError('not a dm-log-writes log (bad magic)');
    if (sup.readBigUInt64LE(8) !== LOG_VERSION) throw new LogFormatError(`log version ${sup.readBigUInt64LE(8)} is not 1`);
    const n = u64(sup, 16, 'nr_entries');
    const sectorSize = sup.readUInt32LE(24);
    if (sectorSize < 512 || sectorSize > 65536 || (sectorSize & (sectorSize - 1)) !== 0) throw new LogFormatError(`sector size ${sectorSize}`);
    const entries: LogEntry[] = [];
    const head = Buffer.alloc(sectorSize);
    let off = sectorSize;
    for (let i = 0; i < n; i++) {
      if (readSync(fd, head, 0, sectorSize, off) !== sectorSize) throw new LogFormatError(`entry ${i} at byte ${off}: log ends`);
      const sector = u64(head, 0, `entry ${i} sector`);
      const nrSectors = u64(head, 8, `entry ${i} nr_sectors`);
      const flags = u64(head, 16, `entry ${i} flags`);
      const dataLen = u64(head, 24, `entry ${i} data_len`);
      const e: LogEntry = { index: i, sector, nrSectors, flags, dataOffset: off + sectorSize };
      if (flags & MARK) {
        if (dataLen > sectorSize - ENTRY_HEAD) throw new LogFormatError(`entry ${i}: mark of ${dataLen} bytes`);
        e.mark = head.subarray(ENTRY_HEAD, ENTRY_HEAD + dataLen).toString('latin1');
      }
      off += sectorSize + (flags & (DISCARD | MARK) ? 0 : nrSectors * sectorSize);
      entries.push(e);
    }
    // the last entry's data must be there
    const last = entries.at(-1);
    if (last && !(last.flags & (DISCARD | MARK)) && last.nrSectors > 0) {
      const probe = Buffer.alloc(1);
      if (readSync(fd, probe, 0, 1, off - 1) !== 1) throw new LogFormatError(`entry ${last.index}: data runs past the end of the log`);
    }
    return { sectorSize, entries, end: off };
  } finally {
    closeSync(fd);
  }
}

export interface NewEntry {
  sector?: number;
  /** data to write at `sector` (a multiple of the sector size) */
  data?: Buffer;
  /** for a discard: how many sectors */
  nrSectors?: number;
  flags?: number;
  mark?: string;
}

/** Writes a log in the kernel's format (tests and tools; the kernel writes the real ones). */
export function writeLog(file: string, sectorSize: number, entries: NewEntry[]): void {
  const fd = openSync(file, 'w');
  try {
    let off = sectorSize;
    for (const e of entries) {
      const head = Buffer.alloc(sectorSize);
      const flags = (e.flags ?? 0) | (e.mark !== undefined ? MARK : 0);
      const data = e.data ?? Buffer.alloc(0);
      if (data.length % sectorSize) throw new Error('data must be whole sectors');
      const nr = flags & DISCARD ? (e.nrSectors ?? 0) : data.length / sectorSize;
      const mark = e.mark !== undefined ? Buffer.from(e.mark, 'latin1') : Buffer.alloc(0);
      head.writeBigUInt64LE(BigInt(e.sector ?? 0), 0);
      head.writeBigUInt64LE(BigInt(nr), 8);
      head.writeBigUInt64LE(BigInt(flags), 16);
      head.writeBigUInt64LE(BigInt(mark.length), 24);
      mark.copy(head, ENTRY_HEAD);
      writeSync(fd, head, 0, sectorSize, off);
      off += sectorSize;
      if (!(flags & (DISCARD | MARK)) && data.length) {
        writeSync(fd, data, 0, data.length, off);
        off += data.length;
      }
    }
    const sup = Buffer.alloc(sectorSize);
    sup.writeBigUInt64LE(LOG_MAGIC, 0);
    sup.writeBigUInt64LE(LOG_VERSION, 8);
    sup.writeBigUInt64LE(BigInt(entries.length), 16);
    sup.writeUInt32LE(sectorSize, 24);
    writeSync(fd, sup, 0, sectorSize, 0);
  } finally {
    closeSync(fd);
  }
}

/** A FLUSH or FUA entry: what was logged up to it is on the disk whatever happens next. */
export const isDurablePoint = (e: LogEntry): boolean => (e.flags & (FLUSH | FUA)) !== 0 && !(e.flags & MARK);
