// The audit chain on real LMDB: any edit, deletion, reordering or truncation up to the last
// signed checkpoint is found; a clean chain verifies.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { appendAudit, auditHead, checkpointMessage, lastCheckpoint, verifyAudit } from '../../services/keystore/audit.js';
import { openDbs, type Dbs } from '../../services/keystore/db.js';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });

async function checkpoint(dbs: Dbs, key = privateKey): Promise<void> {
  const head = auditHead(dbs);
  const last = lastCheckpoint(dbs);
  const body = { seq: head.seq, hash: head.hash, prevSeq: last?.seq ?? 0, prevHash: last?.hash ?? '0'.repeat(64), at: new Date(0).toISOString() };
  const sig = sign('sha256', checkpointMessage(body), { key, dsaEncoding: 'ieee-p1363' }).toString('base64');
  await dbs.checkpoints.put(body.seq, { ...body, sig });
}

async function fresh(): Promise<{ dbs: Dbs; dir: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-audit-'));
  const dbs = openDbs(dir, { mapSizeMb: 64 });
  for (let i = 1; i <= 30; i++) {
    await dbs.root.transaction(() => appendAudit(dbs, 1000 * i, { ev: 'reserve', id: `k-${i}`, uid: 'ab'.repeat(15) }));
    if (i % 10 === 0) await checkpoint(dbs);
  }
  await dbs.root.flushed;
  return { dbs, dir };
}

const t = suite<{ cleanup: (() => Promise<void>)[] }>('audit chain', { cleanup: [] });
t.after.each(async (ctx) => {
  for (const c of ctx.cleanup.splice(0)) await c();
});
const make = async (ctx: { cleanup: (() => Promise<void>)[] }): Promise<Dbs> => {
  const { dbs, dir } = await fresh();
  ctx.cleanup.push(async () => {
    await dbs.root.close();
    await rm(dir, { recursive: true, force: true });
  });
  return dbs;
};

t('a clean chain verifies, with its unsigned tail reported', async (ctx) => {
  const dbs = await make(ctx);
  await dbs.root.transaction(() => appendAudit(dbs, 99_000, { ev: 'inject', id: 'k-31' }));
  const r = verifyAudit(dbs, publicKey);
  assert.equal(r.problems, []);
  assert.ok(r.ok);
  assert.equal([r.entries, r.checkpoints, r.lastCheckpointSeq, r.unsignedTail], [31, 3, 30, 1]);
});

t('an edited entry is found even when the chain is recomputed after it', async (ctx) => {
  const dbs = await make(ctx);
  const e = dbs.audit.get(15)!;
  await dbs.audit.put(15, { ...e, line: e.line.replace('k-15', 'k-99') });
  assert.ok(verifyAudit(dbs, publicKey).problems.includes('entry 15 was edited'));
  // a forger who also recomputes every later hash still hits the signed checkpoint at 20
  let prev = dbs.audit.get(14)!.h;
  const { createHash } = await import('node:crypto');
  for (let s = 15; s <= 30; s++) {
    const cur = JSON.parse(dbs.audit.get(s)!.line) as Record<string, unknown>;
    const line = JSON.stringify({ ...cur, ...(s === 15 ? { id: 'k-99' } : {}), prev });
    prev = createHash('sha256').update(line).digest('hex');
    await dbs.audit.put(s, { line, h: prev });
  }
  await dbs.meta.put('audit-head', { seq: 30, hash: prev });
  const r = verifyAudit(dbs, publicKey);
  assert.not.ok(r.ok);
  assert.ok(r.problems.some((p) => p === 'entry 20 differs from its signed checkpoint'));
});

t('a deleted entry is found', async (ctx) => {
  const dbs = await make(ctx);
  await dbs.audit.remove(7);
  const r = verifyAudit(dbs, publicKey);
  assert.not.ok(r.ok);
  assert.ok(r.problems.some((p) => p.includes('entries 7..7 missing')));
});

t('swapped entries are found', async (ctx) => {
  const dbs = await make(ctx);
  const a = dbs.audit.get(11)!;
  const b = dbs.audit.get(12)!;
  await dbs.audit.put(11, b);
  await dbs.audit.put(12, a);
  const r = verifyAudit(dbs, publicKey);
  assert.not.ok(r.ok);
  assert.ok(r.problems.some((p) => p.includes('entry 11')));
});

t('truncation back behind a checkpoint is found', async (ctx) => {
  const dbs = await make(ctx);
  for (let s = 25; s <= 30; s++) await dbs.audit.remove(s);
  const h = dbs.audit.get(24)!.h;
  await dbs.meta.put('audit-head', { seq: 24, hash: h });
  const r = verifyAudit(dbs, publicKey);
  assert.not.ok(r.ok);
  assert.ok(r.problems.includes('checkpoint 30 names an entry that is gone (truncated)'));
});

t('a checkpoint signed by another key, or a removed checkpoint, is found', async (ctx) => {
  const dbs = await make(ctx);
  await checkpoint(dbs, other.privateKey);
  assert.ok(verifyAudit(dbs, publicKey).problems.some((p) => p.includes('signature does not verify')));
  const dbs2 = await make(ctx);
  await dbs2.checkpoints.remove(20);
  assert.ok(verifyAudit(dbs2, publicKey).problems.includes('checkpoint 30 does not extend checkpoint 10'));
});

t.run();
