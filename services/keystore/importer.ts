// Import of signed, encrypted key batches (appliance/batch-format.ts). Authenticity is
// checked here against the pinned KMS CA; the batch key is opened only by the vault and kept
// wrapped; records go to LMDB as the ciphertext they arrived in. Idempotent by batch id and
// chunk index: duplicated, reordered or re-sent chunks change nothing.
import type { TrustAnchor } from '../../appliance/batch-format.js';
import { verifyChunk } from '../../appliance/batch-format.js';
import { pksError } from '../../appliance/errors.js';
import { appendAudit } from './audit.js';
import { storageError } from './storage-error.js';
import type { ImportChunkResponse } from '../../appliance/contracts/keystore.js';
import type { BatchRecord, Dbs } from './db.js';
import { addAvailable, putOutbox } from './stock.js';
import { checkChunkShe } from './pool-slot.js';

export interface BatchOpener {
  /** ECDH with the transport key in the HSM → the batch key wrapped by the storage key */
  openBatch(batchId: string, epk: string): Promise<Buffer>;
}

export class Importer {
  constructor(
    private readonly dbs: Dbs,
    private readonly trust: TrustAnchor,
    private readonly boxId: string,
    private readonly vault: BatchOpener,
    private readonly now: () => number = Date.now,
  ) {}

  async importChunk(raw: unknown): Promise<ImportChunkResponse> {
    let p;
    try {
      p = verifyChunk(raw, this.trust, this.boxId, new Date(this.now()));
    } catch (e) {
      // a tampered or foreign batch is refused and reported; stock is untouched
      const code = (e as { code?: string }).code ?? 'PKS_BATCH_INVALID';
      try {
        await this.dbs.root.transaction(() => {
          appendAudit(this.dbs, this.now(), { ev: 'batch-refused', code });
          putOutbox(this.dbs, this.now(), 'alert', { kind: 'batch-refused', severity: 'critical', code });
        });
        await this.dbs.root.flushed;
      } catch (w) {
        // the refusal stands even if it cannot be recorded (full disk): the caller gets it
        storageError(w, (this.dbs.root as unknown as { path: string }).path);
      }
      throw e;
    }
    if (!this.dbs.pools.doesExist(p.pool)) throw pksError('PKS_POOL_UNKNOWN', `batch ${p.batchId} is for pool ${p.pool}, not configured on this box`);
    const known = this.dbs.batches.get(p.batchId);
    if (known && (known.pool !== p.pool || known.chunks !== p.chunks || known.epk !== p.epk || known.total !== p.total))
      throw pksError('PKS_BATCH_INVALID', `chunk ${p.chunk} disagrees with batch ${p.batchId} as first seen`);
    checkChunkShe(p.pool, p.batchId, p.she, known?.she);
    if (known?.seen.includes(p.chunk)) return this.answer(known, p.chunk, 0, true);

    // the vault opens the batch key once per batch; later chunks reuse the wrapped key
    const batchKey = known?.batchKey ?? (await this.vault.openBatch(p.batchId, p.epk));
    const records = p.records.map(([id, ct]) => [id, Buffer.from(ct, 'base64')] as const);
    const now = this.now();
    const dataDir = (this.dbs.root as unknown as { path: string }).path;
    const result = await this.dbs.root.transaction(() => {
      // re-read inside the transaction: a concurrent call may have taken this chunk already
      const cur = this.dbs.batches.get(p.batchId);
      if (cur?.seen.includes(p.chunk)) return { batch: cur, added: 0, dup: true };
      const base: BatchRecord = cur ?? {
        batchId: p.batchId,
        pool: p.pool,
        chunks: p.chunks,
        total: p.total,
        batchKey,
        epk: p.epk,
        she: { ...p.she, auth: Buffer.from(p.she.auth, 'base64') },
        seen: [],
        imported: 0,
        complete: false,
        createdAt: now,
      };
      const added = addAvailable(this.dbs, p.pool, p.batchId, records);
      const seen = [...base.seen, p.chunk].sort((a, b) => a - b);
      const batch: BatchRecord = { ...base, seen, imported: base.imported + added, complete: seen.length === base.chunks };
      this.dbs.batches.putSync(p.batchId, batch);
      appendAudit(this.dbs, now, { ev: 'import', batchId: p.batchId, pool: p.pool, chunk: p.chunk, added, skipped: records.length - added });
      if (batch.complete) putOutbox(this.dbs, now, 'event', { kind: 'batch-imported', batchId: p.batchId, pool: p.pool, imported: batch.imported });
      return { batch, added, dup: false };
    }).catch((e: unknown) => {
      throw storageError(e, dataDir);
    });
    await Promise.resolve(this.dbs.root.flushed).catch((e: unknown) => {
      throw storageError(e, dataDir);
    });
    return this.answer(result.batch, p.chunk, result.added, result.dup);
  }

  private answer(b: BatchRecord, chunk: number, imported: number, duplicate: boolean): ImportChunkResponse {
    const missing: number[] = [];
    const seen = new Set(b.seen);
    for (let i = 0; i < b.chunks && missing.length < 100; i++) if (!seen.has(i)) missing.push(i);
    return { batchId: b.batchId, pool: b.pool, chunk, chunks: b.chunks, imported, duplicate, complete: b.complete, missing };
  }
}
