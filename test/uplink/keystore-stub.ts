// A small in-process keystore speaking the uplink's verbs of appliance/contracts/keystore.ts,
// for the uplink tests until the real keystore is wired in. It verifies chunks for real
// (appliance/batch-format.ts verifyChunk against the pinned KMS CA) and, given a vault, makes
// real SHE injections: she-prepare in the vault, an ECU simulator with the OEM auth key
// decrypts M2 and answers M4/M5, which go to the outbox with an audit checkpoint.
import { createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { verifyChunk, type TrustAnchor } from '../../appliance/batch-format.js';
import { pksError } from '../../appliance/errors.js';
import { startIpcServer, type IpcClient, type IpcServer, type VerbTable } from '../../appliance/ipc.js';
import { silentLogger } from '../../appliance/log.js';
import { KEY_UPDATE_ENC_C, sheKdf, sheMessages } from '../../appliance/she.js';
import type { ImportChunkResponse, OutboxItem, PoolStats } from '../../appliance/contracts/keystore.js';
import { newFileId } from '../../services/keystore/outbox.js';
import { packFile } from '../../appliance/verification-file.js';

interface Rec {
  recordId: string;
  batchId: string;
  pool: string;
  blob: string;
  state: 'AVAILABLE' | 'INJECTED' | 'REPORTED';
}
interface Batch {
  pool: string;
  chunks: number;
  got: Set<number>;
  epk: string;
  auth: string;
  she: { keyId: number; authKeyId: number; counter: number; flags: number };
  wrapped?: string;
}

export class KeystoreStub {
  pools: Record<string, { minimum: number; reorder: number }> = {};
  records = new Map<string, Rec>();
  batches = new Map<string, Batch>();
  outbox: OutboxItem[] = [];
  /** items the KMS rejected (outbox-reject): kept, as the keystore keeps them */
  rejected: (OutboxItem & { code: string; detail: string })[] = [];
  revoked: string[] = [];
  calls: string[] = [];
  private seq = 0;
  private checkpoint = { seq: 0, head: '00'.repeat(32) };
  private server: IpcServer | null = null;
  /** the vault on its keystore socket: signs the verification files this stub packs */
  vault: IpcClient | null = null;

  constructor(
    private readonly trust: TrustAnchor,
    private readonly boxId: string,
  ) {}

  async start(dir: string): Promise<string> {
    const verbs = this.verbs();
    this.server = await startIpcServer({ service: 'keystore', dir, verbs, callers: { uplink: Object.keys(verbs) }, log: silentLogger });
    return this.server.sockets.uplink!;
  }
  async stop(): Promise<void> {
    await this.server?.close();
  }

  stats(pool: string): PoolStats {
    const q = this.pools[pool] ?? { minimum: 0, reorder: 0 };
    let available = 0,
      injected = 0,
      reported = 0;
    for (const r of this.records.values())
      if (r.pool === pool) {
        if (r.state === 'AVAILABLE') available++;
        else if (r.state === 'INJECTED') injected++;
        else reported++;
      }
    return { available, reserved: 0, injected, reported, burned: 0, minimum: q.minimum, reorder: q.reorder, burnRate: 0 };
  }

  private put(kind: OutboxItem['kind'], body: Record<string, unknown>): void {
    this.outbox.push({ id: `o${String(++this.seq).padStart(12, '0')}`, kind, at: new Date().toISOString(), body });
  }

  /** A tester injects `n` ECUs of `pool` with the real vault, the ECU answering as a real one would. */
  async inject(vault: IpcClient, pool: string, n: number, authKey: Buffer): Promise<string[]> {
    const done: string[] = [];
    for (const r of this.records.values()) {
      if (done.length >= n) break;
      if (r.pool !== pool || r.state !== 'AVAILABLE') continue;
      const b = this.batches.get(r.batchId)!;
      b.wrapped ??= (await vault.call<{ batchKey: string }>('batch-open', { batchId: r.batchId, epk: b.epk })).batchKey;
      const uid = randomBytes(15);
      const req = { batchId: r.batchId, pool, recordId: r.recordId, batchKey: b.wrapped, record: r.blob, auth: b.auth, uid: uid.toString('hex'), ...b.she };
      const m = await vault.call<{ m1: string; m2: string; m3: string }>('she-prepare', req);
      // the ECU: K1 from its auth key opens M2, whose last block is the new key
      const k1 = sheKdf(authKey, KEY_UPDATE_ENC_C);
      const d = createDecipheriv('aes-128-cbc', k1, Buffer.alloc(16)).setAutoPadding(false);
      const m2 = Buffer.concat([d.update(Buffer.from(m.m2, 'hex')), d.final()]);
      const newKey = m2.subarray(16);
      const proof = sheMessages({ uid, keyId: b.she.keyId, authKeyId: b.she.authKeyId, authKey, newKey, counter: b.she.counter, flags: b.she.flags });
      r.state = 'INJECTED';
      this.put('injection', { batchId: r.batchId, recordId: r.recordId, pool, uid: uid.toString('hex'), m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex'), tester: 't1', station: 's1' });
      done.push(r.recordId);
    }
    const head = createHash('sha256').update(this.checkpoint.head).update(done.join(',')).digest('hex');
    this.put('checkpoint', { seq: this.checkpoint.seq + 1, prev: this.checkpoint.head, head });
    this.checkpoint = { seq: this.checkpoint.seq + 1, head };
    return done;
  }

  verbs(): VerbTable {
    const obj = { type: 'object' } as const;
    return {
      'import-chunk': {
        request: obj,
        maxBytes: 300 * 1024,
        handler: (b: { chunk: unknown }): ImportChunkResponse => {
          this.calls.push('import-chunk');
          const p = verifyChunk(b.chunk, this.trust, this.boxId);
          let batch = this.batches.get(p.batchId);
          if (!batch) {
            batch = { pool: p.pool, chunks: p.chunks, got: new Set(), epk: p.epk, auth: p.she.auth, she: { keyId: p.she.keyId, authKeyId: p.she.authKeyId, counter: p.she.counter, flags: p.she.flags } };
            this.batches.set(p.batchId, batch);
          }
          if (batch.chunks !== p.chunks || batch.pool !== p.pool) throw pksError('PKS_BATCH_INVALID', 'chunk disagrees with its batch');
          const duplicate = batch.got.has(p.chunk);
          let imported = 0;
          if (!duplicate) {
            batch.got.add(p.chunk);
            for (const [recordId, blob] of p.records) {
              this.records.set(recordId, { recordId, batchId: p.batchId, pool: p.pool, blob, state: 'AVAILABLE' });
              imported++;
            }
            this.pools[p.pool] ??= { minimum: 0, reorder: 0 };
          }
          const missing: number[] = [];
          for (let i = 0; i < batch.chunks && missing.length < 100; i++) if (!batch.got.has(i)) missing.push(i);
          return { batchId: p.batchId, pool: p.pool, chunk: p.chunk, chunks: p.chunks, imported, duplicate, complete: batch.got.size === batch.chunks, missing };
        },
      },
      'outbox-file': {
        request: obj,
        handler: async (b: { limit?: number }) => {
          const items = this.outbox.slice(0, b.limit ?? 5000);
          if (items.length === 0 || !this.vault) return { fileId: '', payload: '', sig: '', ids: [] };
          const fileId = newFileId();
          const { text, ids } = packFile(fileId, this.boxId, items);
          const { sig } = await this.vault.call<{ sig: string }>('verification-file', { payload: text });
          return { fileId, payload: text, sig, ids };
        },
      },
      'outbox-reject': {
        request: obj,
        handler: (b: { items: { id: string; code: string; detail: string }[] }) => {
          const ids = new Set(b.items.map((r) => r.id));
          for (const i of this.outbox) if (ids.has(i.id)) this.rejected.push({ ...i, ...b.items.find((r) => r.id === i.id)! });
          this.outbox = this.outbox.filter((i) => !ids.has(i.id));
          return { rejected: ids.size };
        },
      },
      'outbox-peek': {
        request: obj,
        handler: (b: { limit?: number }) => ({ items: this.outbox.slice(0, b.limit ?? 500) }),
      },
      'outbox-ack': {
        request: obj,
        handler: (b: { ids: string[] }) => {
          const ids = new Set(b.ids);
          let reported = 0;
          this.outbox = this.outbox.filter((i) => {
            if (!ids.has(i.id)) return true;
            if (i.kind === 'injection') {
              const r = this.records.get(i.body.recordId as string);
              if (r) r.state = 'REPORTED';
              reported++;
            }
            return false;
          });
          return { acked: ids.size, reported };
        },
      },
      'outbox-put': {
        request: obj,
        handler: (b: { kind: 'alert' | 'event'; body: Record<string, unknown> }) => {
          this.put(b.kind, b.body);
          return { ok: true };
        },
      },
      stats: {
        request: obj,
        handler: () => ({ pools: Object.fromEntries(Object.keys(this.pools).map((p) => [p, this.stats(p)])) }),
      },
      'pool-set': {
        request: obj,
        handler: (b: { pool: string; minimum: number; reorder: number }) => {
          this.calls.push('pool-set');
          this.pools[b.pool] = { minimum: b.minimum, reorder: b.reorder };
          return { pool: b.pool, minimum: b.minimum, reorder: b.reorder };
        },
      },
      'tester-revoke': {
        request: obj,
        handler: (b: { cn: string }) => {
          this.revoked.push(b.cn);
          return { cn: b.cn, revoked: true };
        },
      },
    };
  }
}
