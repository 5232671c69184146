// The import rate of a re-order: a 1M-key batch, built and signed BEFORE the clock starts, fed
// chunk by chunk to the real keystore's import-chunk verb (as the uplink does, one chunk after
// the other); the clock runs from the first chunk sent to the last one answered, when every key
// of the batch is AVAILABLE (the keystore answers a chunk only after its records are flushed).
import { randomBytes } from 'node:crypto';
import type { Box } from '../../scripts/plant/box.js';
import type { ImportChunkResponse, StatsResponse } from '../../appliance/contracts/keystore.js';

export interface ImportResult {
  keys: number;
  chunks: number;
  buildSeconds: number;
  seconds: number;
  keysPerS: number;
}

export async function measureImport(box: Box, pool: string, n: number): Promise<ImportResult> {
  const b0 = performance.now();
  const keys = Array.from({ length: n }, (_, i) => ({ id: `re-${i}`, key: randomBytes(16) }));
  const chunks = box.batch('reorder-1', { pool, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys });
  const buildSeconds = (performance.now() - b0) / 1000;
  const ks = box.keystore.client('pksctl');
  const before = (await ks.call<StatsResponse>('stats')).pools[pool]?.available ?? 0;
  const t0 = performance.now();
  let last: ImportChunkResponse | undefined;
  for (const chunk of chunks) last = await ks.call<ImportChunkResponse>('import-chunk', { chunk }, 60_000);
  const seconds = (performance.now() - t0) / 1000;
  const after = (await ks.call<StatsResponse>('stats')).pools[pool]?.available ?? 0;
  if (!last?.complete || after - before !== n) throw new Error(`import incomplete: complete=${last?.complete} available ${before} → ${after}, expected +${n}`);
  return { keys: n, chunks: chunks.length, buildSeconds, seconds, keysPerS: n / seconds };
}
