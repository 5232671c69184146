// Key stock from the KMS: re-orders once per pool when available < minimum, and not again until
// a batch for that pool has arrived (the pending requestId is persisted first; an unanswered
// request is repeated with the same requestId, which the KMS answers with the same batch, never
// a second one); feeds batch chunks to the keystore (import-chunk, idempotent per batch +
// chunk) and asks for chunks still missing after a quiet period.
import { randomUUID } from 'node:crypto';
import { verifyChunk, type TrustAnchor } from '../../appliance/batch-format.js';
import { asPksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import type { ImportChunkResponse, StatsResponse } from '../../appliance/contracts/keystore.js';
import type { UplinkContext } from './context.js';

const BATCH_REFUSALS = new Set(['PKS_BATCH_INVALID', 'PKS_BATCH_SIGNATURE', 'PKS_BATCH_NOT_FOR_US', 'PKS_SEAL_INVALID', 'PKS_BAD_REQUEST', 'PKS_POOL_UNKNOWN', 'PKS_CONFLICT']);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class StockFeed {
  constructor(
    private readonly c: UplinkContext,
    private readonly trust: TrustAnchor,
    /** a fresh attestation, asked once before the re-orders of a round (issue 12) */
    private readonly attestBeforeReorder: (() => Promise<void>) | null,
  ) {}

  async onChunk(payload: Buffer): Promise<void> {
    const c = this.c;
    let chunk: unknown;
    try {
      chunk = parseJsonOr('PKS_BATCH_INVALID', 'batch chunk', payload);
      // checked here first, so junk costs one signature check and never reaches the keystore
      verifyChunk(chunk, this.trust, c.cfg.boxId);
    } catch (err) {
      c.counters.refusedChunks++;
      const e = asPksError(err);
      return c.raise(e.code, `batch chunk refused: ${e.detail}`);
    }
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await c.keystore.call<ImportChunkResponse>('import-chunk', { chunk }, 60_000);
        c.counters.chunks++;
        if (r.duplicate) c.counters.duplicates++;
        this.noteProgress(r);
        return;
      } catch (err) {
        const e = asPksError(err);
        if (BATCH_REFUSALS.has(e.code) || !e.retry || attempt >= 4) {
          c.counters.refusedChunks++;
          // stock is untouched: the keystore refuses a bad chunk as a whole
          return c.raise(e.code, `batch chunk refused: ${e.detail}`);
        }
        await sleep(200 * 2 ** attempt);
      }
    }
  }

  private noteProgress(r: ImportChunkResponse): void {
    this.c.state.update((s) => {
      if (r.complete) {
        delete s.batches[r.batchId];
        if (s.pending[r.pool]) {
          this.c.log.info('re-order fulfilled', { pool: r.pool, requestId: s.pending[r.pool]!.requestId, batchId: r.batchId });
          delete s.pending[r.pool];
        }
      } else {
        s.batches[r.batchId] = { pool: r.pool, chunks: r.chunks, missing: r.missing, lastAt: new Date().toISOString() };
      }
    });
  }

  async reorders(): Promise<void> {
    const c = this.c;
    const stats = await c.keystore.call<StatsResponse>('stats', {});
    const retryMs = c.cfg.timing.reorderRetrySeconds * 1000;
    let attested = false;
    for (const [pool, p] of Object.entries(stats.pools)) {
      if (!(p.available < p.minimum) || p.reorder <= 0) continue;
      let pending = c.state.state.pending[pool];
      if (pending && Date.now() - Date.parse(pending.at) < retryMs) continue;
      // a fresh quote goes before the re-order: the KMS releases stock only to a box attested just now
      if (this.attestBeforeReorder && !attested) {
        attested = true;
        await this.attestBeforeReorder();
      }
      if (!pending) {
        pending = { requestId: `ro-${randomUUID()}`, count: p.reorder, at: new Date().toISOString() };
        // persisted before it is sent: a restart repeats this request, never makes a new one
        c.state.update((s) => {
          s.pending[pool] = pending!;
          s.reorders++;
        });
        c.log.info('re-ordering', { pool, available: p.available, minimum: p.minimum, count: p.reorder, requestId: pending.requestId });
      } else {
        c.state.update((s) => void (s.pending[pool]!.at = new Date().toISOString()));
        c.log.info('re-order unanswered, asking again (same request)', { pool, requestId: pending.requestId });
      }
      await c.link.publish('reorder', JSON.stringify({ requestId: pending.requestId, pool, count: pending.count }));
    }
  }

  async missingChunks(): Promise<void> {
    const c = this.c;
    const quietMs = c.cfg.timing.chunkTimeoutSeconds * 1000;
    for (const [batchId, b] of Object.entries(c.state.state.batches)) {
      if (Date.now() - Date.parse(b.lastAt) < quietMs || b.missing.length === 0) continue;
      c.counters.resends++;
      c.log.info('asking for missing chunks', { batchId, missing: b.missing.length });
      c.state.update((s) => void (s.batches[batchId]!.lastAt = new Date().toISOString()));
      await c.link.publish('resend', JSON.stringify({ batchId, chunks: b.missing.slice(0, 1000) }));
    }
  }
}
