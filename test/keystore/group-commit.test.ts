// Group commit (services/keystore/group-commit.ts): concurrent changes share a transaction,
// one that throws is rolled back alone, and a durable change resolves only after the flush.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { openDbs, type Dbs } from '../../services/keystore/db.js';
import { GroupCommit } from '../../services/keystore/group-commit.js';

const t = suite<{ dir: string; dbs: Dbs; g: GroupCommit }>('keystore group commit');
t.before.each(async (ctx) => {
  ctx.dir = await mkdtemp(path.join(os.tmpdir(), 'pks-gc-'));
  ctx.dbs = openDbs(path.join(ctx.dir, 'db'), { mapSizeMb: 64 });
  ctx.g = new GroupCommit(ctx.dbs.root);
});
t.after.each(async (ctx) => {
  await ctx.dbs.root.close();
  await rm(ctx.dir, { recursive: true, force: true });
});

t('changes made at once share groups; one that throws fails alone, its neighbours stand', async ({ dbs, g }) => {
  const r = await Promise.allSettled(
    Array.from({ length: 40 }, (_, i) =>
      g.durable(() => {
        // as in stock.ts: every check before the first write
        if (i === 7) throw new Error('half-way');
        dbs.meta.putSync(`k${i}`, i);
        return i;
      }),
    ),
  );
  assert.is(r.filter((x) => x.status === 'fulfilled').length, 39);
  assert.is((r[7] as PromiseRejectedResult).reason.message, 'half-way');
  assert.is(dbs.meta.get('k7'), undefined);
  assert.is(dbs.meta.get('k8'), 8);
  assert.ok(g.stats.groups < 40, `${g.stats.groups} groups for 40 changes`);
  assert.is(g.stats.changes, 40);
});

t('a durable change resolves after the flush; a committed one before it', async (ctx) => {
  const { dbs, g } = ctx;
  const events: string[] = [];
  const c = g.committed(() => dbs.meta.putSync('a', 1)).then(() => events.push('committed'));
  const d = g.durable(() => dbs.meta.putSync('b', 2)).then(() => events.push('durable'));
  await Promise.all([c, d]);
  assert.equal(events, ['committed', 'durable']);
  await g.flushed();
  // re-opened from disk, both are there
  await dbs.root.close();
  ctx.dbs = openDbs(path.join(ctx.dir, 'db'));
  assert.is(ctx.dbs.meta.get('a'), 1);
  assert.is(ctx.dbs.meta.get('b'), 2);
});

t.run();
