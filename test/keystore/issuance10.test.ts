// Issue 10 on real parts (LMDB, SoftHSM vault, the strict SHE simulator): rework on a real SHE
// (counters per ECU slot), quotas owned by the keystore, idempotency per tester and the
// hand-over, retries that never lose a proof, slots bound, compaction. Each test reproduces a
// finding of the issue; on the code before it, each fails.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { SHE_COUNTER_MAX, sheVerify } from '../../appliance/she.js';
import { randomSheKeys, type SheKeySet } from '../../scripts/plant/batch.js';
import { SheEcu, SheError } from '../../scripts/plant/ecu-sim.js';
import type { ReserveResponse } from '../../appliance/contracts/keystore.js';
import { checkDistinctTargets } from '../../services/keystore/pool-slot.js';
import { code, startRig, type Rig } from './rig.js';

const POOL = 'oem1.ecuR.4';
const master = randomBytes(16);
const HOUR = 3_600_000;
let n = 0;
const uid = (): string => (0x2000000 + n++).toString(16).padStart(30, '1');
const set = (prefix: string, count: number, over: Partial<SheKeySet> = {}): SheKeySet => ({ pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys(prefix, count), ...over });
const hexb = (s: string): Buffer => Buffer.from(s, 'hex');
const load = (ecu: SheEcu, p: ReserveResponse) => ecu.loadKey(hexb(p.m1), hexb(p.m2), hexb(p.m3));
const outbox = (r: Rig) => r.ks.outboxPeek(5000);
const audit = (r: Rig): { ev: string; [k: string]: unknown }[] => [...r.ks.dbs.audit.getRange({})].map((e) => JSON.parse(e.value.line));

const t = suite<{ r: Rig }>('issuance (issue 10)');
t.before(async (ctx) => {
  ctx.r = await startRig({ pools: [POOL], ttlMs: HOUR, quotas: { openPerTester: 8, testerPerHour: 30, poolPerHour: 100_000 } });
  for (const c of ctx.r.batch('r-1', set('r1', 400), 100)) await ctx.r.ks.importer.importChunk(c);
  for (const cn of ['line-1', 'line-2', 'rework-1', 'rogue-1', 'loop-1'])
    await ctx.r.ks.putTester({ cn, station: `st-${cn}`, pools: [POOL], expiresAt: '2099-01-01T00:00:00Z', revoked: false });
});
t.after(async ({ r }) => r?.stop());

// ---------------------------------------------------------------- 1. rework on a real SHE

t('rework: the ECU loaded the key, the proof was lost; the replacement carries a higher counter and the strict SHE takes it', async ({ r }) => {
  const u = uid();
  const ecu = new SheEcu(hexb(u), master);
  const p1 = await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
  assert.is(p1.counter, 1, 'the first package carries the batch base counter');
  load(ecu, p1); // the key is in the ECU ...
  await r.ks.fail(p1.packageId, 'line-1', 'proof lost in transit'); // ... but the tester never saw M4/M5
  await r.restart(); // the counter is durable
  const p2 = await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
  assert.is.not(p2.packageId, p1.packageId);
  assert.is(p2.counter, 2);
  const proof = load(ecu, p2); // a real SHE refuses a counter that is not above the slot's
  const ok = await r.ks.confirm(p2.packageId, 'line-1', proof.m4.toString('hex'), proof.m5.toString('hex'));
  assert.equal([ok.state, ok.verified], ['INJECTED', true]);
  assert.is(ecu.slot(4)!.counter, 2);
  // the KMS learns the counter: it verifies the proof with it
  const inj = (await outbox(r)).find((i) => i.kind === 'injection' && i.body.packageId === p2.packageId)!;
  assert.is(inj.body.counter, 2);
  const burn = (await outbox(r)).find((i) => i.kind === 'burn' && i.body.packageId === p1.packageId)!;
  assert.is(burn.body.counter, 1);
});

t('rework: counters never go down; a batch with a higher base counter wins; the 28-bit limit refuses, changing nothing', async ({ r }) => {
  for (const c of r.batch('r-max', { ...set('rmax', 5), pool: 'oem1.ecuM.4', counter: SHE_COUNTER_MAX }).values()) {
    await r.ks.setPool({ pool: 'oem1.ecuM.4', minimum: 0, reorder: 1, critical: 0 });
    await r.ks.importer.importChunk(c);
  }
  const u = uid();
  const p = await r.ks.reserve({ pool: 'oem1.ecuM.4', uid: u, tester: 'line-1', station: 'st-line-1' });
  assert.is(p.counter, SHE_COUNTER_MAX);
  await r.ks.fail(p.packageId, 'line-1', 'proof lost');
  const before = r.ks.stats()['oem1.ecuM.4']!;
  assert.is(await code(r.ks.reserve({ pool: 'oem1.ecuM.4', uid: u, tester: 'line-1', station: 'st-line-1' })), 'PKS_SHE_COUNTER_EXHAUSTED');
  assert.equal(r.ks.stats()['oem1.ecuM.4'], before);
});

// ---------------------------------------------------------------- 2. the three failure kinds

t('failure kinds on the strict SHE: never loaded (same counter is fine), loaded (rework), slot already holds a newer key', async ({ r }) => {
  // never loaded: the ECU still has its supplier key (counter 0): the fresh package is taken
  const a = uid();
  const ecuA = new SheEcu(hexb(a), master);
  const pa = await r.ks.reserve({ pool: POOL, uid: a, tester: 'line-1', station: 'st-line-1' });
  await r.ks.fail(pa.packageId, 'line-1', 'ECU did not answer');
  const pa2 = await r.ks.reserve({ pool: POOL, uid: a, tester: 'line-1', station: 'st-line-1' });
  const proofA = load(ecuA, pa2);
  assert.is((await r.ks.confirm(pa2.packageId, 'line-1', proofA.m4.toString('hex'), proofA.m5.toString('hex'))).state, 'INJECTED');
  // already holds a key in that slot with a higher counter (another line wrote it): refused as SHE does
  const c = uid();
  const ecuC = new SheEcu(hexb(c), master, { slots: { 4: { key: randomBytes(16), counter: 1000 } } });
  const pc = await r.ks.reserve({ pool: POOL, uid: c, tester: 'line-1', station: 'st-line-1' });
  assert.throws(() => load(ecuC, pc), (e: unknown) => e instanceof SheError && e.erc === 'ERC_KEY_UPDATE_ERROR');
  assert.is((await r.ks.fail(pc.packageId, 'line-1', 'ERC_KEY_UPDATE_ERROR: slot holds a newer key')).state, 'BURNED');
});

// ---------------------------------------------------------------- 3. quotas owned by the keystore

t('quota: invented UIDs stop at the open-reservation cap; one alert names the tester and its station', async ({ r }) => {
  const got: string[] = [];
  let refused = '';
  for (let i = 0; i < 40; i++) {
    const c = await code(r.ks.reserve({ pool: POOL, uid: uid(), tester: 'rogue-1', station: 'st-rogue-1' }).then((p) => got.push(p.packageId)));
    if (c !== 'no error') refused = c;
  }
  assert.is(got.length, 8);
  assert.is(refused, 'PKS_RESERVATIONS_OPEN');
  await r.restart(); // durable
  assert.is(await code(r.ks.reserve({ pool: POOL, uid: uid(), tester: 'rogue-1', station: 'st-rogue-1' })), 'PKS_RESERVATIONS_OPEN');
  const alerts = (await outbox(r)).filter((i) => i.kind === 'alert' && i.body.kind === 'quota-drain' && i.body.tester === 'rogue-1');
  assert.is(alerts.length, 1);
  assert.is(alerts[0]!.body.station, 'st-rogue-1');
});

t('quota: reserve U / fail U / reserve U costs a key each time; at most cap + hourly quota; refills on the monotonic hour', async ({ r }) => {
  const u = uid();
  let keys = 0;
  let last = '';
  for (let i = 0; i < 60; i++) {
    try {
      const p = await r.ks.reserve({ pool: POOL, uid: u, tester: 'loop-1', station: 'st-loop-1' });
      if (!p.reused) keys++;
      await r.ks.fail(p.packageId, 'loop-1', 'again');
    } catch (e) {
      last = (e as { code: string }).code;
    }
  }
  assert.is(keys, 30, 'the hourly quota of 30');
  assert.is(last, 'PKS_QUOTA_EXCEEDED');
  assert.ok(keys <= 8 + 30);
  await r.restart();
  assert.is(await code(r.ks.reserve({ pool: POOL, uid: uid(), tester: 'loop-1', station: 'st-loop-1' })), 'PKS_QUOTA_EXCEEDED');
  r.clock.wall += 10 * HOUR; // a wall-clock step refills nothing
  assert.is(await code(r.ks.reserve({ pool: POOL, uid: uid(), tester: 'loop-1', station: 'st-loop-1' })), 'PKS_QUOTA_EXCEEDED');
  r.clock.wall -= 10 * HOUR;
  r.clock.mono += HOUR / 10; // a tenth of an hour: 3 keys
  let more = 0;
  for (let i = 0; i < 5; i++) if ((await code(r.ks.reserve({ pool: POOL, uid: uid(), tester: 'loop-1', station: 'st-loop-1' }))) === 'no error') more++;
  assert.is(more, 3);
  assert.is((await outbox(r)).filter((i) => i.kind === 'alert' && i.body.kind === 'quota-drain' && i.body.tester === 'loop-1').length, 1);
});

t('quota: a committed reservation is never refunded; its retry (the caller timed out) is free and gets the same package', async ({ r }) => {
  await r.ks.putTester({ cn: 'slow-1', station: 'st-slow', pools: [POOL], expiresAt: '2099-01-01T00:00:00Z', revoked: false });
  const u = uid();
  const first = await r.ks.reserve({ pool: POOL, uid: u, tester: 'slow-1', station: 'st-slow' }); // the answer "timed out"
  const q = r.ks.dbs.quotas.get('t:slow-1')!;
  assert.equal([q.open, Math.round(q.tokens)], [1, 29]);
  const again = await r.ks.reserve({ pool: POOL, uid: u, tester: 'slow-1', station: 'st-slow' });
  assert.equal([again.packageId, again.reused], [first.packageId, true]);
  const q2 = r.ks.dbs.quotas.get('t:slow-1')!;
  assert.equal([q2.open, Math.round(q2.tokens)], [1, 29]);
});

// ---------------------------------------------------------------- 5. idempotency belongs to one tester

t('another tester gets a coded conflict for an open reservation; the hand-over moves it, audited', async ({ r }) => {
  const u = uid();
  const ecu = new SheEcu(hexb(u), master);
  const p = await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-2', station: 'st-line-2' });
  assert.is(await code(r.ks.reserve({ pool: POOL, uid: u, tester: 'rework-1', station: 'st-rework-1' })), 'PKS_RESERVED_BY_OTHER');
  assert.is(await code(r.ks.handover({ pool: POOL, uid: u, to: 'nobody', by: 'ops', reason: 'rework' })), 'PKS_TESTER_UNKNOWN');
  const h = await r.ks.handover({ pool: POOL, uid: u, to: 'rework-1', by: 'ops-anna', reason: 'ECU moved to rework' });
  assert.equal(h, { packageId: p.packageId, tester: 'rework-1', station: 'st-rework-1' });
  assert.is(await code(r.ks.reserve({ pool: POOL, uid: u, tester: 'line-2', station: 'st-line-2' })), 'PKS_RESERVED_BY_OTHER');
  const mine = await r.ks.reserve({ pool: POOL, uid: u, tester: 'rework-1', station: 'st-rework-1' });
  assert.equal([mine.packageId, mine.reused, mine.m2], [p.packageId, true, p.m2]);
  const proof = load(ecu, mine);
  assert.is(await code(r.ks.confirm(p.packageId, 'line-2', proof.m4.toString('hex'), proof.m5.toString('hex'))), 'PKS_NOT_FOUND');
  assert.is((await r.ks.confirm(p.packageId, 'rework-1', proof.m4.toString('hex'), proof.m5.toString('hex'))).state, 'INJECTED');
  const ev = audit(r).find((e) => e.ev === 'handover' && e.id === p.packageId)!;
  assert.equal([ev.from, ev.to, ev.by, ev.toStation], ['line-2', 'rework-1', 'ops-anna', 'st-rework-1']);
  assert.ok((await outbox(r)).some((i) => i.kind === 'event' && i.body.kind === 'handover' && i.body.packageId === p.packageId));
  // the M1..M3 of an injected ECU are never served again: its tester learns the package id
  const same = await code(r.ks.reserve({ pool: POOL, uid: u, tester: 'rework-1', station: 'st-rework-1' }));
  assert.is(same, 'PKS_ALREADY_INJECTED');
  try {
    await r.ks.reserve({ pool: POOL, uid: u, tester: 'rework-1', station: 'st-rework-1' });
  } catch (e) {
    assert.match((e as Error).message, p.packageId);
  }
  try {
    await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
    assert.unreachable();
  } catch (e) {
    assert.is((e as { code: string }).code, 'PKS_ALREADY_INJECTED');
    assert.not.match((e as Error).message, p.packageId);
  }
});

// ---------------------------------------------------------------- 6. retries never lose a proof

t('a retry of a RESERVED package extends its time to live', async ({ r }) => {
  const u = uid();
  const p = await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
  r.clock.mono += 0.8 * HOUR;
  await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
  r.clock.mono += 0.8 * HOUR;
  await r.ks.sweep();
  assert.is(r.ks.dbs.keys.get(p.packageId)!.state, 'RESERVED');
  r.clock.mono += 0.3 * HOUR;
  await r.ks.sweep();
  assert.is(r.ks.dbs.keys.get(p.packageId)!.state, 'BURNED');
});

t('an NTP step forward burns nothing in flight; the sweep counts monotonic time', async ({ r }) => {
  const p = await r.ks.reserve({ pool: POOL, uid: uid(), tester: 'line-1', station: 'st-line-1' });
  r.clock.wall += 400 * 24 * HOUR; // RTC reset to an old date, then NTP steps a year forward
  assert.is(await r.ks.sweep(), 0);
  assert.is(r.ks.dbs.keys.get(p.packageId)!.state, 'RESERVED');
  r.clock.wall -= 400 * 24 * HOUR;
  await r.ks.fail(p.packageId, 'line-1', 'done');
});

t('a valid proof for a package the sweep burned is recorded: INJECTED (late), audited, reported to the KMS', async ({ r }) => {
  const u = uid();
  const ecu = new SheEcu(hexb(u), master);
  const p = await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
  const proof = load(ecu, p);
  r.clock.mono += 2 * HOUR;
  assert.ok((await r.ks.sweep()) >= 1);
  assert.is(r.ks.dbs.keys.get(p.packageId)!.state, 'BURNED');
  const bad = await code(r.ks.confirm(p.packageId, 'line-1', '00'.repeat(32), '00'.repeat(16)));
  assert.is(bad, 'PKS_STATE_INVALID');
  const ok = await r.ks.confirm(p.packageId, 'line-1', proof.m4.toString('hex'), proof.m5.toString('hex'));
  assert.equal([ok.state, ok.verified], ['INJECTED', true]);
  assert.ok(audit(r).some((e) => e.ev === 'inject-late' && e.id === p.packageId));
  const inj = (await outbox(r)).find((i) => i.kind === 'injection' && i.body.packageId === p.packageId)!;
  assert.is(inj.body.late, true);
  assert.ok(sheVerify({ uid: hexb(u), keyId: 4, authKeyId: 1, authKey: master, newKey: ecu.slot(4)!.key, counter: inj.body.counter as number, flags: 0 }, hexb(inj.body.m4 as string), hexb(inj.body.m5 as string)));
});

// ---------------------------------------------------------------- 7. slots are bound

t('slots bound: a batch for another SHE slot is refused; chunks must agree; two pools on one ECU slot are refused', async ({ r }) => {
  const wrong = r.batch('r-slot', set('rslot', 3, { keyId: 5 }))[0]!;
  assert.is(await code(r.ks.importer.importChunk(wrong)), 'PKS_BATCH_INVALID');
  const a = r.batch('r-mix', set('rmix', 4), 2);
  const b = r.batch('r-mix', set('rmix', 4, { counter: 9 }), 2);
  await r.ks.importer.importChunk(a[0]!);
  assert.is(await code(r.ks.importer.importChunk(b[1]!)), 'PKS_BATCH_INVALID');
  assert.is(await code(r.ks.setPool({ pool: 'OEM1.ecuR.key4', minimum: 1, reorder: 1, critical: 0 })), 'PKS_CONFIG_INVALID');
  assert.throws(() => checkDistinctTargets(['oem1.bcm.4', 'oem1.gw.4', 'oem1.BCM.k04']), /same OEM, ECU type and slot/);
  checkDistinctTargets(['oem1.bcm.4', 'oem1.bcm.5', 'oem2.bcm.4']);
});

// ---------------------------------------------------------------- 8. compaction

t('compaction: REPORTED records under a KMS-acknowledged checkpoint lose their ciphertext, keep what the audit and KMS need', async ({ r }) => {
  const u = uid();
  const ecu = new SheEcu(hexb(u), master);
  const p = await r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' });
  const proof = load(ecu, p);
  await r.ks.confirm(p.packageId, 'line-1', proof.m4.toString('hex'), proof.m5.toString('hex'));
  const inj = (await outbox(r)).find((i) => i.kind === 'injection' && i.body.packageId === p.packageId)!;
  await r.ks.outboxAck([inj.id]);
  assert.is(r.ks.dbs.keys.get(p.packageId)!.state, 'REPORTED');
  assert.is(await r.ks.compact(), 0, 'nothing before the KMS acknowledged a checkpoint past it');
  await r.ks.checkpoint();
  const cp = (await outbox(r)).filter((i) => i.kind === 'checkpoint').pop()!;
  await r.ks.outboxAck([cp.id]);
  assert.ok((await r.ks.compact()) >= 1);
  const rec = r.ks.dbs.keys.get(p.packageId)!;
  assert.equal([rec.state, rec.compacted, rec.ct.length, rec.uid, rec.counter, rec.tester], ['REPORTED', true, 0, u, p.counter, 'line-1']);
  assert.is(await code(r.ks.reserve({ pool: POOL, uid: u, tester: 'line-1', station: 'st-line-1' })), 'PKS_ALREADY_INJECTED');
  // a re-sent batch never resurrects a compacted key
  const again = r.batch('r-again', { ...set('r1', 0), keys: [{ id: p.packageId, key: randomBytes(16) }] });
  assert.is((await r.ks.importer.importChunk(again[0]!)).imported, 0);
});
t.run();
