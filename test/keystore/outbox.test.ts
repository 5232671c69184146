// Issue 9 item 4: the outbox lets out only what is on disk. Real LMDB, the real keystore
// process for the restart case.
//  - peek (and so every verification file) returns only items whose commit is flushed;
//  - no outbox id ever names two items, also after a power cut rolled the sequence back;
//  - an item the KMS rejects (PKS_CONFLICT: one key reported for two ECUs) is never deleted:
//    it stays queryable with the KMS's reason and a critical alert is recorded with it.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { silentLogger } from '../../appliance/log.js';
import { ROOT } from '../../scripts/plant/process.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { openDbs } from '../../services/keystore/db.js';
import { Keystore, type VaultPort } from '../../services/keystore/keystore.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';

const POOL = 'oem1.obx.key4';
const run = promisify(execFile);
const t = suite<{ box: Box }>('keystore outbox (issue 9 item 4)', {} as { box: Box });

t.before(async (ctx) => {
  ctx.box = await startBox({ pools: [{ pool: POOL, minimum: 0, reorder: 1 }] });
});
t.after(async (ctx) => {
  await ctx.box?.stop();
});

t('peek answers only once what it returns is flushed to disk', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-obx-'));
  const dbs = openDbs(dir, { mapSizeMb: 64 });
  try {
    const ks = new Keystore(dbs, {} as VaultPort, { ca: null as never }, 'box-obx', { checkpointEvery: 1e6, checkpointMs: 1e6, reservationTtlMs: 1e6 }, silentLogger);
    await ks.outboxPut('event', { n: 1 });
    // from here on the disk "never" confirms: an item committed now must not be let out
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const real = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(dbs.root), 'flushed') ?? Object.getOwnPropertyDescriptor(dbs.root, 'flushed');
    Object.defineProperty(dbs.root, 'flushed', { configurable: true, get: () => gate });
    // committed (readers see it), its flush not yet confirmed
    await ks.dbs.root.transaction(() => ks.dbs.outbox.putSync('0000000000009999', { kind: 'event', at: new Date().toISOString(), body: { n: 2 } }));
    let settled = false;
    const peek = Promise.resolve(ks.outboxPeek(10)).then((items) => {
      settled = true;
      return items as OutboxItem[];
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.is(settled, false, 'peek answered before the disk confirmed the items it returns');
    release();
    const items = await peek;
    assert.equal(items.map((i) => i.body.n), [1, 2]);
    if (real) Object.defineProperty(dbs.root, 'flushed', real);
    else delete (dbs.root as unknown as { flushed?: unknown }).flushed;
  } finally {
    await dbs.root.close();
    await rm(dir, { recursive: true, force: true });
  }
});

t('a power cut that rolls back the outbox sequence never makes one id name two items', async ({ box }) => {
  const up = box.keystore.client('uplink');
  const { id: sent } = await up.call<{ id: string }>('outbox-put', { kind: 'event', body: { what: 'sent to the KMS before the cut' } });
  await box.keystore.proc.kill9();
  // the power cut: that item's commit never reached the disk (it is gone, the sequence is back)
  const dbs = openDbs(box.keystore.dataDir, { mapSizeMb: 4096 });
  await dbs.outbox.remove(sent);
  await dbs.meta.put('outbox-seq', ((dbs.meta.get('outbox-seq') as number) ?? 1) - 1);
  await dbs.root.flushed;
  await dbs.root.close();
  await box.keystore.restart();
  const { id: next } = await up.call<{ id: string }>('outbox-put', { kind: 'event', body: { what: 'a different item' } });
  assert.is.not(next, sent, 'the new item reuses the id the KMS already holds for another item');
  assert.ok(next > sent, 'ids stay sortable oldest first');
  assert.match(next, /^[0-9]{16}$/);
});

t('an item the KMS rejects stays queryable and raises a durable critical alert', async ({ box }) => {
  const up = box.keystore.client('uplink');
  const { id } = await up.call<{ id: string }>('outbox-put', { kind: 'event', body: { what: 'will be rejected' } });
  const r = await up.call<{ rejected: number }>('outbox-reject', { items: [{ id, code: 'PKS_CONFLICT', detail: 'key k-1 was already reported for ECU 01' }] });
  assert.is(r.rejected, 1);
  const peek = (await up.call<{ items: OutboxItem[] }>('outbox-peek', { limit: 5000 })).items;
  assert.not.ok(peek.some((i) => i.id === id), 'no longer sent');
  const alert = peek.find((i) => i.kind === 'alert' && i.body.kind === 'kms-rejected' && i.body.id === id);
  assert.ok(alert, 'a critical alert goes out with it');
  assert.is(alert!.body.severity, 'critical');
  // kept, after a restart too, for pksctl and the sentinel (which mails it)
  await box.keystore.restart();
  for (const caller of ['sentinel', 'pksctl']) {
    const kept = (await box.keystore.client(caller).call<{ items: (OutboxItem & { code: string; detail: string })[] }>('outbox-rejected', {})).items;
    const it = kept.find((i) => i.id === id);
    assert.ok(it, caller);
    assert.equal([it!.code, it!.body.what], ['PKS_CONFLICT', 'will be rejected']);
  }
  // plant IT sees it with pksctl
  const cli = await run(process.execPath, [path.join(ROOT, 'bin', 'pksctl.mjs'), 'outbox', 'rejected', '--json'], { env: { ...process.env, PKS_RUN_DIR: box.runDir }, timeout: 60_000 });
  assert.ok((JSON.parse(cli.stdout) as { items: { id: string; code: string }[] }).items.some((i) => i.id === id && i.code === 'PKS_CONFLICT'));
  // an ack for it now deletes nothing: it is not in the outbox any more, and not lost either
  await up.call('outbox-ack', { ids: [id] });
  assert.ok((await box.keystore.client('pksctl').call<{ items: OutboxItem[] }>('outbox-rejected', {})).items.some((i) => i.id === id));
});

t.run();
