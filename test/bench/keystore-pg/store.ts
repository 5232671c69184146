// The baseline keystore on PostgreSQL: the same issuance flow as services/keystore (claim a
// key, ask the vault for M1..M3; verify the ECU's proof in the vault, record it), with
// PostgreSQL as the durable buffer (synchronous_commit on: a package leaves only after its
// row is on disk). Only the buffer differs from the real keystore, so a benchmark of the two
// behind the same tester API compares LMDB with PostgreSQL and nothing else.
import pg from 'pg';
import { verifyChunk, type TrustAnchor } from '../../../appliance/batch-format.js';
import { PksError, pksError } from '../../../appliance/errors.js';
import type { IpcClient } from '../../../appliance/ipc.js';
import type { SheCall } from '../../../services/keystore/keystore.js';
import type { ConfirmResponse, ImportChunkResponse, KeyState, ReserveRequest, ReserveResponse, TesterRecord } from '../../../appliance/contracts/keystore.js';
import { DDL } from './schema.js';

interface Batch {
  batchId: string;
  pool: string;
  batchKey: Buffer;
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
  auth: Buffer;
}

interface Issued {
  package_id: string;
  pool: string;
  uid: string;
  tester: string;
  batch_id: string;
  ct: Buffer;
  state: KeyState;
}

const UNIQUE_VIOLATION = '23505';

// claim the oldest AVAILABLE key of the pool and record it as issued, in one statement; a
// second reservation for the same ECU violates issued_pool_uid and rolls the claim back
const CLAIM = `
WITH c AS (
  DELETE FROM avail WHERE id = (
    SELECT id FROM avail WHERE pool = $1 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1
  ) RETURNING record_id, batch_id, ct
)
INSERT INTO issued (package_id, pool, uid, tester, station, batch_id, ct, state, reserved_at, updated_at)
SELECT record_id, $1, $2, $3, $4, batch_id, ct, 'RESERVED', now(), now() FROM c
RETURNING package_id, pool, uid, tester, batch_id, ct, state`;

const LIVE = `SELECT package_id, pool, uid, tester, batch_id, ct, state FROM issued WHERE pool = $1 AND uid = $2 AND state <> 'BURNED'`;

export class PgKeystore {
  private readonly batches = new Map<string, Batch>();

  constructor(
    readonly db: pg.Pool,
    private readonly vault: IpcClient,
    private readonly trust: TrustAnchor,
    private readonly boxId: string,
    private readonly pools: ReadonlySet<string>,
  ) {}

  async init(): Promise<void> {
    await this.db.query(DDL);
  }

  private async batch(batchId: string): Promise<Batch> {
    const hit = this.batches.get(batchId);
    if (hit) return hit;
    const r = await this.db.query('SELECT * FROM batches WHERE batch_id = $1', [batchId]);
    const row = r.rows[0];
    if (!row) throw pksError('PKS_STORE_FAILURE', `batch ${batchId} is missing`);
    const b: Batch = { batchId, pool: row.pool, batchKey: row.batch_key, keyId: row.key_id, authKeyId: row.auth_key_id, counter: row.counter, flags: row.flags, auth: row.auth };
    this.batches.set(batchId, b);
    return b;
  }

  private sheCall(b: Batch, rec: Issued): SheCall {
    return {
      batchId: b.batchId,
      pool: rec.pool,
      recordId: rec.package_id,
      batchKey: b.batchKey.toString('base64'),
      record: rec.ct.toString('base64'),
      auth: b.auth.toString('base64'),
      uid: rec.uid,
      keyId: b.keyId,
      authKeyId: b.authKeyId,
      counter: b.counter,
      flags: b.flags,
    };
  }

  async reserve(r: ReserveRequest): Promise<ReserveResponse> {
    if (!this.pools.has(r.pool)) throw pksError('PKS_POOL_UNKNOWN', r.pool);
    const uid = r.uid.toLowerCase();
    if (/^0+$/.test(uid)) throw pksError('PKS_SHE_INVALID', 'uid 0 (wildcard) is not an ECU');
    let rec: Issued | undefined;
    let reused = false;
    try {
      rec = (await this.db.query<Issued>(CLAIM, [r.pool, uid, r.tester, r.station])).rows[0];
      if (!rec) throw pksError('PKS_POOL_EMPTY', r.pool);
    } catch (e) {
      if (e instanceof PksError) throw e;
      if ((e as { code?: string }).code !== UNIQUE_VIOLATION) throw pksError('PKS_STORE_FAILURE', 'reservation failed', e);
      rec = (await this.db.query<Issued>(LIVE, [r.pool, uid])).rows[0];
      if (!rec) throw pksError('PKS_CONFLICT', 'reservation raced; ask again');
      reused = true;
    }
    const b = await this.batch(rec.batch_id);
    const m = await this.vault.call<{ m1: string; m2: string; m3: string }>('she-prepare', this.sheCall(b, rec));
    return { packageId: rec.package_id, pool: rec.pool, uid, keyId: b.keyId, authKeyId: b.authKeyId, counter: b.counter, flags: b.flags, ...m, reused };
  }

  async confirm(packageId: string, tester: string, m4: string, m5: string): Promise<ConfirmResponse> {
    const rec = (await this.db.query<Issued>('SELECT package_id, pool, uid, tester, batch_id, ct, state FROM issued WHERE package_id = $1 AND tester = $2', [packageId, tester])).rows[0];
    if (!rec) throw pksError('PKS_NOT_FOUND', 'no such package for this tester');
    if (rec.state === 'BURNED') throw pksError('PKS_STATE_INVALID', 'package is BURNED');
    const b = await this.batch(rec.batch_id);
    const proof = { m4: m4.toLowerCase(), m5: m5.toLowerCase() };
    const { ok } = await this.vault.call<{ ok: boolean }>('she-verify', { ...this.sheCall(b, rec), ...proof });
    if (rec.state !== 'RESERVED') {
      if (ok) return { packageId, state: rec.state, verified: true };
      throw pksError('PKS_STATE_INVALID', `package is ${rec.state}`);
    }
    const state: KeyState = ok ? 'INJECTED' : 'BURNED';
    const u = await this.db.query(
      `UPDATE issued SET state = $3, m4 = $4, m5 = $5, updated_at = now() WHERE package_id = $1 AND tester = $2 AND state = 'RESERVED' RETURNING state`,
      [packageId, tester, state, proof.m4, proof.m5],
    );
    if (!u.rowCount) throw pksError('PKS_CONFLICT', 'package changed meanwhile');
    return { packageId, state, verified: ok };
  }

  async tester(cn: string): Promise<TesterRecord> {
    const r = await this.db.query<{ rec: TesterRecord }>('SELECT rec FROM testers WHERE cn = $1', [cn]);
    if (!r.rows[0]) throw pksError('PKS_TESTER_UNKNOWN', cn);
    return r.rows[0].rec;
  }

  async putTester(t: TesterRecord): Promise<void> {
    await this.db.query('INSERT INTO testers (cn, rec) VALUES ($1, $2) ON CONFLICT (cn) DO UPDATE SET rec = EXCLUDED.rec', [t.cn, JSON.stringify(t)]);
  }

  async stats(): Promise<Record<string, { available: number; reserved: number; injected: number; burned: number }>> {
    const out: Record<string, { available: number; reserved: number; injected: number; burned: number }> = {};
    for (const p of this.pools) out[p] = { available: 0, reserved: 0, injected: 0, burned: 0 };
    for (const row of (await this.db.query<{ pool: string; n: string }>('SELECT pool, count(*) AS n FROM avail GROUP BY pool')).rows) if (out[row.pool]) out[row.pool]!.available = Number(row.n);
    for (const row of (await this.db.query<{ pool: string; state: string; n: string }>('SELECT pool, state, count(*) AS n FROM issued GROUP BY pool, state')).rows) {
      const c = out[row.pool];
      const k = row.state.toLowerCase() as 'reserved' | 'injected' | 'burned';
      if (c && k in c) c[k] = Number(row.n);
    }
    return out;
  }

  /** One signed chunk in, its records AVAILABLE, in one transaction; a chunk seen before changes nothing. */
  async importChunk(raw: unknown): Promise<ImportChunkResponse> {
    const p = verifyChunk(raw, this.trust, this.boxId);
    if (!this.pools.has(p.pool)) throw pksError('PKS_POOL_UNKNOWN', `batch ${p.batchId} is for pool ${p.pool}, not configured on this box`);
    let known = this.batches.get(p.batchId) ?? (await this.batch(p.batchId).catch(() => undefined));
    const batchKey = known?.batchKey ?? Buffer.from((await this.vault.call<{ batchKey: string }>('batch-open', { batchId: p.batchId, epk: p.epk })).batchKey, 'base64');
    const c = await this.db.connect();
    let added = 0;
    let dup = false;
    try {
      await c.query('BEGIN');
      if (!known) {
        await c.query('INSERT INTO batches VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (batch_id) DO NOTHING', [
          p.batchId, p.pool, batchKey, p.she.keyId, p.she.authKeyId, p.she.counter, p.she.flags, Buffer.from(p.she.auth, 'base64'),
        ]);
      }
      const ins = await c.query('INSERT INTO chunks VALUES ($1, $2) ON CONFLICT DO NOTHING', [p.batchId, p.chunk]);
      dup = ins.rowCount === 0;
      if (!dup) {
        const r = await c.query('INSERT INTO avail (pool, record_id, batch_id, ct) SELECT $1, unnest($2::text[]), $3, unnest($4::bytea[])', [
          p.pool, p.records.map((x) => x[0]), p.batchId, p.records.map((x) => Buffer.from(x[1], 'base64')),
        ]);
        added = r.rowCount ?? 0;
      }
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      throw pksError('PKS_STORE_FAILURE', 'import failed', e);
    } finally {
      c.release();
    }
    const seen = new Set((await this.db.query<{ chunk: number }>('SELECT chunk FROM chunks WHERE batch_id = $1', [p.batchId])).rows.map((r) => r.chunk));
    const missing: number[] = [];
    for (let i = 0; i < p.chunks && missing.length < 100; i++) if (!seen.has(i)) missing.push(i);
    return { batchId: p.batchId, pool: p.pool, chunk: p.chunk, chunks: p.chunks, imported: added, duplicate: dup, complete: seen.size === p.chunks, missing };
  }
}
