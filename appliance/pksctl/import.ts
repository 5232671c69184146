// pksctl import FILE: plant IT's manual import of a key batch from another source (USB stick,
// file transfer). FILE holds one signed chunk per line (appliance/batch-format.ts); the
// keystore checks every chunk exactly as it checks chunks from the KMS.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { MAX_CHUNK_BYTES } from '../batch-format.js';
import { pksError } from '../errors.js';
import { parseJsonOr } from '../json.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

export async function importCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  if (positionals.length !== 1) throw pksError('PKS_BAD_REQUEST', 'usage: pksctl import FILE [--json]');
  const ks = ipcClient(socketPath('keystore', 'pksctl'), { timeoutMs: 60_000, connections: 1 });
  const lines = createInterface({ input: createReadStream(positionals[0]!, { encoding: 'utf8' }), crlfDelay: Infinity });
  const batches = new Map<string, { pool: string; imported: number; complete: boolean; missing: number[] }>();
  let n = 0;
  try {
    for await (const line of lines) {
      n++;
      if (!line.trim()) continue;
      if (line.length > MAX_CHUNK_BYTES + 16 * 1024) throw pksError('PKS_TOO_LARGE', `line ${n} is larger than a chunk may be`);
      const chunk = parseJsonOr('PKS_BATCH_INVALID', `line ${n}`, line);
      const r = await ks.call<{ batchId: string; pool: string; imported: number; complete: boolean; missing: number[] }>('import-chunk', { chunk });
      const b = batches.get(r.batchId) ?? { pool: r.pool, imported: 0, complete: false, missing: [] };
      batches.set(r.batchId, { pool: r.pool, imported: b.imported + r.imported, complete: r.complete, missing: r.missing });
    }
  } catch (e) {
    const c = (e as { code?: string }).code;
    if (c === 'ENOENT' || c === 'EACCES' || c === 'EISDIR') throw pksError('PKS_NOT_FOUND', `cannot read ${positionals[0]}`);
    throw e;
  } finally {
    await ks.close();
  }
  const summary = [...batches.entries()].map(([batchId, b]) => ({ batchId, ...b }));
  if (values.json) out(JSON.stringify({ batches: summary }));
  else for (const b of summary) out(`${b.batchId} (${b.pool}): ${b.imported} keys imported${b.complete ? ', batch complete' : `, waiting for chunks ${b.missing.join(',')}`}`);
  return summary.every((b) => b.complete) ? 0 : 1;
}
