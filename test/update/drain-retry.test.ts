// The drain against a real keystore (LMDB, SoftHSM vault, the strict SHE simulator), through
// the verb table main.ts serves: while draining, a tester that lost the answer to its
// reservation asks again for the same ECU and gets the same package back, so it can finish the
// reservation the drain is waiting for; anything that would take a key from the stock is still
// refused. Before this, every reserve was refused while draining: the open reservation of a
// tester that had lost its answer could not finish, and the drain waited out its whole timeout
// (CI's VM run: "drained in 126s").
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { silentLogger } from '../../appliance/log.js';
import type { IpcClient } from '../../appliance/ipc.js';
import type { ReserveResponse } from '../../appliance/contracts/keystore.js';
import { keystoreVerbs } from '../../services/keystore/verbs.js';
import { Drain, updateVerbs, withDrain } from '../../services/keystore/update-verbs.js';
import { code, startRig, type Rig } from '../keystore/rig.js';

const POOL = 'oem1.ecuD.4';
const master = randomBytes(16);
const ctx = { caller: 'tester-api', log: silentLogger };
let n = 0;
const uid = (): string => (0x3000000 + n++).toString(16).padStart(30, '1');
const hexb = (s: string): Buffer => Buffer.from(s, 'hex');

const t = suite<{ r: Rig }>('drain with a real keystore');
t.before(async (c) => {
  c.r = await startRig({ pools: [POOL] });
  for (const ch of c.r.batch('d-1', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys('d1', 20) }, 10)) await c.r.ks.importer.importChunk(ch);
  for (const cn of ['line-1', 'line-2']) await c.r.ks.putTester({ cn, station: `st-${cn}`, pools: [POOL], expiresAt: '2099-01-01T00:00:00Z', revoked: false });
});
t.after(async ({ r }) => r?.stop());

t('draining: the same ECU asked again by its tester gets its package back and finishes; a new ECU is refused; the drain then sees nothing open', async ({ r }) => {
  const drain = new Drain();
  const verbs = { ...withDrain(keystoreVerbs(r.ks), drain, r.ks), ...updateVerbs(r.ks, {} as IpcClient, drain) };
  const reserve = (u: string, tester = 'line-1') => verbs.reserve!.handler({ pool: POOL, uid: u, tester, station: `st-${tester}` }, ctx) as Promise<ReserveResponse>;
  const u = uid();
  const first = await reserve(u); // its answer is lost on the way to the tester
  assert.equal(await verbs.drain!.handler({ on: true, activeSeconds: 600 }, ctx), { draining: true, open: 1, stale: 0 });
  const before = r.ks.stats()[POOL];
  const again = await reserve(u);
  assert.is(again.packageId, first.packageId);
  assert.is(again.reused, true);
  assert.equal([again.m1, again.m2, again.m3], [first.m1, first.m2, first.m3]);
  // no key left the stock while draining: a new ECU, and this ECU for another tester, are refused
  let refused: unknown;
  try {
    await reserve(uid());
  } catch (e) {
    refused = e;
  }
  assert.is((refused as { code?: string }).code, 'PKS_UPDATE_DRAINING');
  assert.is((refused as { status?: number }).status, 503);
  assert.is(await code(reserve(u, 'line-2')), 'PKS_RESERVED_BY_OTHER');
  assert.equal(r.ks.stats()[POOL], before);
  // the tester finishes what the drain waits for
  const ecu = new SheEcu(hexb(u), master);
  const proof = ecu.loadKey(hexb(again.m1), hexb(again.m2), hexb(again.m3));
  const ok = await verbs.confirm!.handler({ packageId: again.packageId, tester: 'line-1', m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') }, ctx);
  assert.is((ok as { state: string }).state, 'INJECTED');
  assert.equal(await verbs.drain!.handler({ on: true, activeSeconds: 600 }, ctx), { draining: true, open: 0, stale: 0 });
  await verbs.drain!.handler({ on: false }, ctx);
});

t('draining: an ECU whose package was burned would need a fresh key: refused until the drain ends', async ({ r }) => {
  const drain = new Drain();
  const verbs = { ...withDrain(keystoreVerbs(r.ks), drain, r.ks), ...updateVerbs(r.ks, {} as IpcClient, drain) };
  const reserve = (u: string) => verbs.reserve!.handler({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' }, ctx) as Promise<ReserveResponse>;
  const u = uid();
  const p = await reserve(u);
  await r.ks.fail(p.packageId, 'line-1', 'ECU did not answer');
  await verbs.drain!.handler({ on: true }, ctx);
  const before = r.ks.stats()[POOL];
  assert.is(await code(reserve(u)), 'PKS_UPDATE_DRAINING');
  assert.equal(r.ks.stats()[POOL], before);
  await verbs.drain!.handler({ on: false }, ctx);
  const fresh = await reserve(u);
  assert.is.not(fresh.packageId, p.packageId);
  assert.is(fresh.reused, false);
});

t.run();
