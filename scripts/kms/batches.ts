// Batches for one box: allocation (a disjoint range of a pool, recorded with the batch in one
// synchronous transaction, idempotent per box + requestId) and the signed, encrypted chunks
// (appliance/batch-format.ts + batch-crypto.ts). Chunks can be rebuilt at any time (resend,
// restart): the batch's ephemeral key is kept, so every rebuild opens under the same batch key.
import { createHash, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync } from 'node:crypto';
import { aeadSeal, authAad, deriveBatchKey, recordAad } from '../../appliance/batch-crypto.js';
import { MAX_RECORDS_PER_CHUNK, type BatchPayload, type SignedChunk } from '../../appliance/batch-format.js';
import { pksError } from '../../appliance/errors.js';
import { growPool } from './oem.js';
import { signChunkWith, type BatchSigner } from './signer.js';
import type { BatchRecord, KmsStore } from './store.js';

export type { BatchSigner } from './signer.js';

/** Payload budget per chunk: the broker takes 256 KiB per packet, batch-format 240 KiB per payload. */
const CHUNK_PAYLOAD_BUDGET = 180 * 1024;

export const recordIdOf = (pool: string, index: number): string => `${pool}:${index}`;

export function parseRecordId(id: string): { pool: string; index: number } | null {
  const m = /^(.+):(\d{1,10})$/.exec(id);
  return m ? { pool: m[1]!, index: Number(m[2]) } : null;
}

/** Records per chunk for a pool, from the size of its longest record line. */
export function recordsPerChunk(pool: string, total: number): number {
  // ["<pool>:<index>","<b64 of 44 bytes>"], inside a JSON string (quotes escaped) + comma
  const line = recordIdOf(pool, total).length + 60 + 12;
  return Math.max(1, Math.min(MAX_RECORDS_PER_CHUNK, Math.floor(CHUNK_PAYLOAD_BUDGET / line)));
}

const batchIdOf = (boxId: string, requestId: string): string => `b-${createHash('sha256').update(`${boxId}\0${requestId}`).digest('hex').slice(0, 32)}`;

export interface AllocateResult {
  batch: BatchRecord;
  /** false when the request was answered before (the same batch comes back) */
  created: boolean;
}

/**
 * The batch answering `requestId` from `boxId`: the recorded one if there is one, else a new
 * allocation of up to `count` keys. Throws PKS_POOL_EMPTY when nothing is left to allocate.
 */
export function allocate(store: KmsStore, boxId: string, requestId: string, pool: string, count: number, now = new Date()): AllocateResult {
  return store.root.transactionSync(() => {
    const seen = store.requests.get([boxId, requestId]);
    if (seen) {
      const b = store.batches.get(seen);
      if (b) return { batch: b, created: false };
    }
    if (!store.boxes.get(boxId)) throw pksError('PKS_NOT_FOUND', `box ${boxId} is not registered`);
    const p = store.pools.get(pool);
    if (!p) throw pksError('PKS_POOL_UNKNOWN', pool);
    if (p.generate && p.count - p.next < count) growPool(store, p, count - (p.count - p.next));
    const n = Math.min(count, p.count - p.next);
    if (n <= 0) throw pksError('PKS_POOL_EMPTY', `no stock left in ${pool}`);
    const epk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    const per = recordsPerChunk(pool, p.next + n);
    const batch: BatchRecord = {
      batchId: batchIdOf(boxId, requestId),
      boxId,
      pool,
      requestId,
      from: p.next,
      count: n,
      chunks: Math.ceil(n / per),
      per,
      createdAt: now.toISOString(),
      epk: epk.export({ type: 'pkcs8', format: 'der' }).toString('base64'),
    };
    p.next += n;
    store.pools.putSync(pool, p);
    store.batches.putSync(batch.batchId, batch);
    store.requests.putSync([boxId, requestId], batch.batchId);
    store.updateBox(boxId, (b) => {
      b.counters.batches++;
      b.counters.keysSent += n;
    });
    return { batch, created: true };
  });
}

/** Builds (or rebuilds) the signed chunks `which` (default all) of a batch, lazily. */
export function* buildChunks(store: KmsStore, batch: BatchRecord, signer: BatchSigner, which?: readonly number[]): Generator<SignedChunk> {
  const box = store.boxes.get(batch.boxId);
  const p = store.pools.get(batch.pool);
  if (!box || !p) throw pksError('PKS_NOT_FOUND', 'batch refers to an unknown box or pool');
  const epk = createPrivateKey({ key: Buffer.from(batch.epk, 'base64'), format: 'der', type: 'pkcs8' });
  const transport = createPublicKey({ key: Buffer.from(box.transport, 'base64'), format: 'der', type: 'spki' });
  const shared = diffieHellman({ privateKey: epk, publicKey: transport });
  const key = deriveBatchKey(shared, batch.batchId, batch.boxId);
  shared.fill(0);
  try {
    const authKey = Buffer.from(p.authKey, 'hex');
    const auth = aeadSeal(key, authKey, authAad(batch.batchId, batch.pool)).toString('base64');
    authKey.fill(0);
    const per = batch.per;
    const epkSpki = createPublicKey(epk).export({ type: 'spki', format: 'der' }).toString('base64');
    for (const c of which ?? Array.from({ length: batch.chunks }, (_, i) => i)) {
      if (!Number.isInteger(c) || c < 0 || c >= batch.chunks) continue;
      const records: [string, string][] = [];
      for (let i = c * per; i < Math.min(batch.count, (c + 1) * per); i++) {
        const index = batch.from + i;
        const k = store.keyAt(batch.pool, index);
        if (!k) throw pksError('PKS_INTERNAL', 'allocated key is missing from the store');
        const rid = recordIdOf(batch.pool, index);
        records.push([rid, aeadSeal(key, k, recordAad(batch.batchId, rid)).toString('base64')]);
        k.fill(0);
      }
      const payload: BatchPayload = {
        type: 'pks-batch',
        v: 1,
        batchId: batch.batchId,
        boxId: batch.boxId,
        pool: batch.pool,
        chunk: c,
        chunks: batch.chunks,
        total: batch.count,
        createdAt: batch.createdAt,
        epk: epkSpki,
        she: { ...p.she, auth },
        records,
      };
      yield signChunkWith(payload, signer);
    }
  } finally {
    key.fill(0);
  }
}
