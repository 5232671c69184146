// What a failed LMDB commit means for the caller. A full disk shows up from lmdb-js as a
// failed commit with EIO or ENOSPC (the pages could not be written), a full map as
// MDB_MAP_FULL: both are PKS_STORE_FULL, so the sentinel and plant IT see "full", not
// "broken". Nothing was committed either way: the transaction is all or nothing.
import { statfsSync } from 'node:fs';
import { pksError, type PksError } from '../../appliance/errors.js';

const LOW_SPACE = 8 * 1024 * 1024;

export function storageError(e: unknown, dataDir: string): PksError {
  if ((e as PksError)?.code?.startsWith?.('PKS_')) return e as PksError;
  // lmdb-js hangs the low-level cause on a promise of its own: observe it so it cannot
  // surface later as an unhandled rejection and take the process down
  const inner = (e as { commitError?: Promise<unknown> })?.commitError;
  if (inner && typeof inner.catch === 'function') inner.catch(() => {});
  const msg = String((e as Error)?.message ?? e);
  if (/MDB_MAP_FULL|ENOSPC|No space/i.test(msg) || lowSpace(dataDir)) return pksError('PKS_STORE_FULL', 'key store is full: free disk space on the data volume', e);
  return pksError('PKS_STORE_FAILURE', 'key store write failed', e);
}

function lowSpace(dir: string): boolean {
  try {
    const s = statfsSync(dir);
    return s.bavail * s.bsize < LOW_SPACE;
  } catch {
    return false;
  }
}
