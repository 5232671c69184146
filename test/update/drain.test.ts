// The keystore's update hooks (services/keystore/update-verbs.ts) on real LMDB: drain refuses
// new reservations with PKS_UPDATE_DRAINING whose detail carries the Retry-After the tester API
// sends, while confirm goes on, and counts only the reservations young enough to be in a tester's
// cycle as open; update-health verifies the audit chain with the vault's key and
// finds the entry the old slot left (the same data) or says it is gone.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isPksError, pksError } from '../../appliance/errors.js';
import type { IpcClient, VerbTable } from '../../appliance/ipc.js';
import { silentLogger } from '../../appliance/log.js';
import { retryAfterOf } from '../../appliance/contracts/update.js';
import { appendAudit, auditHead } from '../../services/keystore/audit.js';
import { openDbs } from '../../services/keystore/db.js';
import type { Keystore } from '../../services/keystore/keystore.js';
import { Drain, openReservations, updateVerbs, withDrain } from '../../services/keystore/update-verbs.js';

const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spki = publicKey.export({ type: 'spki', format: 'der' }).toString('base64');
const vault = { call: async (verb: string) => (verb === 'status' ? { ready: true } : { spki }), close: async () => undefined } as unknown as IpcClient;
const ctx = { caller: 'tester-api', log: silentLogger };

test('drain: reserve refused with a coded 503 and its Retry-After, confirm still served, open count reported', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-drain-'));
  const dbs = openDbs(dir, { mapSizeMb: 16 });
  try {
    // two reservations in the pending index, keyed by the keystore's monotonic time
    await dbs.root.transaction(() => {
      dbs.pending.putSync([1_000, 'k-1'], null);
      dbs.pending.putSync([2_000, 'k-2'], null);
    });
    const ks = { dbs, mono: { now: () => 5_000 } } as unknown as Keystore;
    const calls: string[] = [];
    const base: VerbTable = {
      reserve: { request: {}, handler: () => (calls.push('reserve'), { ok: true }) },
      confirm: { request: {}, handler: () => (calls.push('confirm'), { ok: true }) },
    };
    const drain = new Drain();
    // Keystore.reserve's way with a refusal from the gate (drain-retry.test.ts has the real one)
    const gated = {
      grant: () => ({ station: 'st-1' }),
      reserve: async (_r: unknown, newKey?: () => { refused: 'PKS_UPDATE_DRAINING'; detail: string } | null) => {
        const g = newKey?.();
        if (g) throw pksError(g.refused, g.detail);
        return base.reserve!.handler({}, ctx);
      },
    } as unknown as Pick<Keystore, 'grant' | 'reserve'>;
    const verbs = { ...withDrain(base, drain, gated), ...updateVerbs(ks, vault, drain) };
    await verbs.reserve!.handler({}, ctx);
    assert.equal(await verbs.drain!.handler({ on: true, retryAfterSeconds: 45 }, ctx), { draining: true, open: 2, stale: 0 });
    let err: unknown;
    try {
      await verbs.reserve!.handler({}, ctx);
    } catch (e) {
      err = e;
    }
    assert.ok(isPksError(err) && err.code === 'PKS_UPDATE_DRAINING' && err.status === 503 && err.retry);
    assert.is(retryAfterOf((err as { detail: string }).detail), 45);
    await verbs.confirm!.handler({}, ctx);
    await dbs.root.transaction(() => {
      dbs.pending.removeSync([1_000, 'k-1']);
      dbs.pending.removeSync([2_000, 'k-2']);
    });
    assert.equal(await verbs.drain!.handler({ on: true }, ctx), { draining: true, open: 0, stale: 0 });
    await verbs.drain!.handler({ on: false }, ctx);
    await verbs.reserve!.handler({}, ctx);
    assert.equal(calls, ['reserve', 'confirm', 'reserve']);
  } finally {
    await dbs.root.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('drain: a reservation older than the drain window is stale, not waited for', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-drain-'));
  const dbs = openDbs(dir, { mapSizeMb: 16 });
  try {
    // at mono 600 s: one orphan from 9 minutes ago (its tester API was killed), one 10 s old
    await dbs.root.transaction(() => {
      dbs.pending.putSync([60_000, 'orphan'], null);
      dbs.pending.putSync([590_000, 'in-cycle'], null);
    });
    let now = 600_000;
    const ks = { dbs, mono: { now: () => now } } as unknown as Keystore;
    const verbs = updateVerbs(ks, vault, new Drain());
    assert.equal(await verbs.drain!.handler({ on: true, activeSeconds: 120 }, ctx), { draining: true, open: 1, stale: 1 });
    // the young one ages past the window too: nothing left to wait for
    now = 711_000;
    assert.equal(await verbs.drain!.handler({ on: true, activeSeconds: 120 }, ctx), { draining: true, open: 0, stale: 2 });
    assert.equal(openReservations(dbs, 600_000), { open: 2, stale: 0 });
    assert.equal(openReservations(dbs, 50_000, 1_000), { open: 2, stale: 0 }, 'before both: nothing is stale');
  } finally {
    await dbs.root.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('update-health: same data found by the mark, lost data found missing', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-uh-'));
  const dbs = openDbs(dir, { mapSizeMb: 16 });
  try {
    for (let i = 1; i <= 5; i++) await dbs.root.transaction(() => appendAudit(dbs, 1000 * i, { ev: 'reserve', id: `k-${i}` }));
    await dbs.root.flushed;
    const ks = { dbs, mono: { now: () => 0 } } as unknown as Keystore;
    const verbs = updateVerbs(ks, vault, new Drain());
    const head = auditHead(dbs);
    const h = (await verbs['update-health']!.handler({ seq: head.seq }, ctx)) as { vaultOk: boolean; auditOk: boolean; hashAt: string | null; headSeq: number };
    assert.ok(h.vaultOk && h.auditOk);
    assert.is(h.hashAt, head.hash);
    assert.is(h.headSeq, 5);
    const gone = (await verbs['update-health']!.handler({ seq: 9 }, ctx)) as { hashAt: string | null };
    assert.is(gone.hashAt, null);
  } finally {
    await dbs.root.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
