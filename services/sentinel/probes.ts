// Collectors for the storage check's inputs. Kept apart from checks.ts, which stays pure.
import { statfs } from 'node:fs/promises';
import { pksError } from '../../appliance/errors.js';
import type { DiskInput, MapUsageInput } from './checks.js';

/** What an lmdb-js environment reports about itself (`db.getStats()`). */
interface LmdbStats {
  pageSize: number;
  mapSize: number;
  lastPageNumber: number;
}

/** Fill level of an open LMDB environment: pages in use against the map size. */
export function lmdbUsage(name: string, db: { getStats(): unknown }): MapUsageInput {
  const s = db.getStats() as Partial<LmdbStats>;
  if (typeof s.pageSize !== 'number' || typeof s.mapSize !== 'number' || typeof s.lastPageNumber !== 'number') {
    throw pksError('PKS_STORE_FAILURE', `lmdb stats of ${name}`);
  }
  return { name, mapSize: s.mapSize, usedBytes: (s.lastPageNumber + 1) * s.pageSize };
}

/** Free bytes for an unprivileged writer (bavail, not bfree) on the file system of `path`. */
export async function diskUsage(path: string): Promise<DiskInput> {
  try {
    const s = await statfs(path);
    return { path, freeBytes: s.bavail * s.bsize, totalBytes: s.blocks * s.bsize };
  } catch (e) {
    throw pksError('PKS_STORE_FAILURE', `statfs ${path}`, e);
  }
}
