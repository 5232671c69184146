// The buffer alone, in this process, without the vault's work: a durable reserve and a
// durable confirm, each with its audit entry, 64 at a time. LMDB: the keystore's own
// transactions (stock.ts reserveTx/confirmTx: counters, indexes, hash-chained audit, outbox)
// through its group commit, each resolved after `flushed`. PostgreSQL in its best form: one
// statement per step (the SKIP LOCKED claim and its audit row in one CTE; the update and its
// audit row in another), synchronous_commit on, a pool of 32 connections. The PostgreSQL
// audit rows carry no hash chain (that would serialise every writer on the chain head), so
// the comparison favours PostgreSQL.
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import pg from 'pg';
import { openDbs } from '../../services/keystore/db.js';
import { GroupCommit } from '../../services/keystore/group-commit.js';
import { addAvailable, confirmTx, isRefusal, reserveTx } from '../../services/keystore/stock.js';
import { runLoad, uidMaker, type LoadResult } from './load.js';
import type { Postgres } from './postgres.js';

const POOL = 'oem1.buffer.4';
const PROOF = { m4: 'ab'.repeat(32), m5: 'cd'.repeat(16) };

export async function lmdbBuffer(o: { dir: string; keys: number; concurrency: number; warmupMs: number; measureMs: number }): Promise<LoadResult & { groups: number; largest: number }> {
  const dbs = openDbs(path.join(o.dir, 'buffer-lmdb'), { mapSizeMb: 8192 });
  try {
    await dbs.pools.put(POOL, { pool: POOL, minimum: 0, reorder: 1, critical: 0 });
    // the reservation takes its SHE counter from the batch (counters.ts): the batch must be on record
    await dbs.batches.put('buffer-batch', { batchId: 'buffer-batch', pool: POOL, chunks: 1, total: o.keys, batchKey: randomBytes(40), epk: '', she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0, auth: randomBytes(48) }, seen: [0], imported: o.keys, complete: true, createdAt: Date.now() });
    const ct = randomBytes(48);
    for (let done = 0; done < o.keys; done += 100_000) {
      const recs: [string, Buffer][] = [];
      for (let i = done; i < Math.min(o.keys, done + 100_000); i++) recs.push([`buf-${i}`, ct]);
      dbs.root.transactionSync(() => addAvailable(dbs, POOL, 'buffer-batch', recs));
    }
    await dbs.root.flushed;
    const group = new GroupCommit(dbs.root);
    const next = uidMaker(0x40);
    const r = await runLoad({
      concurrency: o.concurrency,
      warmupMs: o.warmupMs,
      measureMs: o.measureMs,
      async inject(w) {
        const tester = `t${w}`;
        const res = await group.durable(() => reserveTx(dbs, Date.now(), { pool: POOL, uid: next(), tester, station: `s${w}` }));
        if (isRefusal(res)) throw Object.assign(new Error(res.detail), { code: res.refused });
        const c = await group.durable(() => confirmTx(dbs, Date.now(), res.rec.id, tester, true, PROOF));
        if (isRefusal(c)) throw Object.assign(new Error(c.detail), { code: c.refused });
      },
    });
    return { ...r, groups: group.stats.groups, largest: group.stats.largest };
  } finally {
    await dbs.root.close();
  }
}

const DDL = `
CREATE TABLE avail (id bigserial PRIMARY KEY, pool text NOT NULL, record_id text NOT NULL, ct bytea NOT NULL)
  WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX avail_pool_id ON avail (pool, id);
CREATE TABLE issued (package_id text PRIMARY KEY, pool text NOT NULL, uid text NOT NULL, tester text NOT NULL, station text NOT NULL,
  ct bytea NOT NULL, state text NOT NULL, m4 text, m5 text, reserved_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)
  WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0, fillfactor = 80);
CREATE UNIQUE INDEX issued_pool_uid ON issued (pool, uid) WHERE state <> 'BURNED';
CREATE TABLE audit (seq bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), line jsonb NOT NULL);
`;

const RESERVE = `
WITH c AS (
  DELETE FROM avail WHERE id = (SELECT id FROM avail WHERE pool = $1 ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
  RETURNING record_id, ct
), i AS (
  INSERT INTO issued (package_id, pool, uid, tester, station, ct, state, reserved_at, updated_at)
  SELECT record_id, $1, $2, $3, $4, ct, 'RESERVED', now(), now() FROM c RETURNING package_id
), a AS (
  INSERT INTO audit (line) SELECT jsonb_build_object('ev', 'reserve', 'id', package_id, 'pool', $1::text, 'uid', $2::text, 'tester', $3::text) FROM i
)
SELECT package_id FROM i`;

const CONFIRM = `
WITH u AS (
  UPDATE issued SET state = 'INJECTED', m4 = $3, m5 = $4, updated_at = now()
  WHERE package_id = $1 AND tester = $2 AND state = 'RESERVED' RETURNING package_id, pool, uid
), a AS (
  INSERT INTO audit (line) SELECT jsonb_build_object('ev', 'inject', 'id', package_id, 'pool', pool, 'uid', uid, 'm4', $3::text, 'm5', $4::text) FROM u
)
SELECT package_id FROM u`;

export async function pgBuffer(o: { pg: Postgres; keys: number; concurrency: number; warmupMs: number; measureMs: number }): Promise<LoadResult> {
  const db = new pg.Pool({ host: o.pg.host, port: o.pg.port, user: 'postgres', database: 'postgres', max: 32 });
  try {
    await db.query('DROP TABLE IF EXISTS avail, issued, audit');
    await db.query(DDL);
    const ct = randomBytes(48);
    for (let done = 0; done < o.keys; done += 20_000) {
      const n = Math.min(20_000, o.keys - done);
      await db.query('INSERT INTO avail (pool, record_id, ct) SELECT $1, $2 || g, $3 FROM generate_series($4::int, $5::int) g', [POOL, 'buf-', ct, done, done + n - 1]);
    }
    await db.query('VACUUM ANALYZE avail');
    const next = uidMaker(0x41);
    return await runLoad({
      concurrency: o.concurrency,
      warmupMs: o.warmupMs,
      measureMs: o.measureMs,
      async inject(w) {
        const tester = `t${w}`;
        const r = await db.query<{ package_id: string }>(RESERVE, [POOL, next(), tester, `s${w}`]);
        const id = r.rows[0]?.package_id;
        if (!id) throw Object.assign(new Error('pool empty'), { code: 'PKS_POOL_EMPTY' });
        const c = await db.query(CONFIRM, [id, tester, PROOF.m4, PROOF.m5]);
        if (!c.rowCount) throw new Error('confirm changed nothing');
      },
    });
  } finally {
    // keystore-pg creates tables of the same names in this cluster afterwards
    await db.query('DROP TABLE IF EXISTS avail, issued, audit').catch(() => {});
    await db.end();
  }
}
