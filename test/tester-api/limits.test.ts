// Per-tester request rates and reservation quotas: the buckets on a fake clock, then 429s over
// mTLS with Retry-After, and a retry of a known reservation that never spends quota.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { KeyedBuckets, RecentReservations, SlidingWindow } from '../../services/tester-api/limits.js';
import { POOL_A, call, startRig, uid } from './fixture.js';

const test = suite('tester-api: limits');

test('token bucket: burst, refill, retry-after, refund', () => {
  let t = 1_000_000;
  const b = new KeyedBuckets(3, 2, () => t);
  assert.equal([b.take('a'), b.take('a'), b.take('a')], [0, 0, 0]);
  assert.is(b.take('a'), 500, 'one token at 2/s is 500 ms away');
  assert.is(b.take('b'), 0, 'buckets are per key');
  t += 500;
  assert.is(b.take('a'), 0);
  b.refund('a');
  assert.is(b.take('a'), 0);
  t += 60_000;
  assert.equal([b.take('a'), b.take('a'), b.take('a'), b.take('a') > 0], [0, 0, 0, true], 'refill stops at the capacity');
});

test('sliding window and recent reservations are bounded', () => {
  let t = 0;
  const w = new SlidingWindow(2, 1000, () => t, 3);
  assert.equal([w.hit('x'), w.hit('x'), w.hit('x')], [true, true, false]);
  t = 1000;
  assert.ok(w.hit('x'), 'old hits leave the window');
  const r = new RecentReservations(2, 2);
  r.add('t1', 'p', 'AA');
  assert.ok(r.has('t1', 'p', 'aa'));
  r.add('t1', 'p', 'bb');
  r.add('t1', 'p', 'cc');
  assert.not.ok(r.has('t1', 'p', 'aa'), 'oldest entry evicted');
});

test('request rate: 429 PKS_RATE_LIMITED with Retry-After, per tester', async () => {
  const rig = await startRig({ limits: { requestsPerSecond: 1, burst: 5 } });
  try {
    const c = rig.client('busy');
    const codes: number[] = [];
    let limited;
    for (let i = 0; i < 7; i++) {
      const r = await call(c, 'GET', '/v1/history?limit=1');
      codes.push(r.status);
      if (r.status === 429) limited = r;
    }
    assert.equal(codes, [200, 200, 200, 200, 200, 429, 429]);
    assert.is(limited!.body.code, 'PKS_RATE_LIMITED');
    assert.is(limited!.body.retry, true);
    assert.ok(Number(limited!.headers['retry-after']) >= 1);
    assert.is(rig.api.metrics.rateLimited, 2);
    assert.is((await call(rig.client('alice'), 'GET', '/v1/history?limit=1')).status, 200, 'another tester is not affected');
  } finally {
    await rig.close();
  }
});

test('quota: new reservations per hour; retries do not count; 429 PKS_QUOTA_EXCEEDED stops inventing serials', async () => {
  const rig = await startRig({ limits: { newReservationsPerHour: 3 } });
  try {
    const c = rig.client('greedy');
    const reserve = (n: number) => call(c, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(0x1000 + n) });
    for (let n = 0; n < 3; n++) assert.is((await reserve(n)).status, 200);
    // retries of known ECUs are free and still answered
    for (let n = 0; n < 3; n++) {
      const r = await reserve(n);
      assert.is(r.status, 200);
      assert.is(r.body.reused, true);
    }
    const before = rig.stub.callsOf('reserve').length;
    const over = await reserve(3);
    assert.is(over.status, 429);
    assert.is(over.body.code, 'PKS_QUOTA_EXCEEDED');
    assert.ok(Number(over.headers['retry-after']) > 60, `retry-after ${over.headers['retry-after']}`);
    assert.is(rig.stub.callsOf('reserve').length, before, 'the keystore was not asked');
    assert.is((await reserve(1)).status, 200, 'a retry still works at an empty quota');
    assert.is(rig.api.metrics.quotaExceeded, 1);
    // a reservation the keystore refused gives its quota back
    const fresh = rig.client('ecu-station');
    rig.stub.stock.set(POOL_A, 0);
    for (let n = 0; n < 4; n++) assert.is((await call(fresh, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(0x2000 + n) })).body.code, 'PKS_POOL_EMPTY');
    rig.stub.stock.delete(POOL_A);
    for (let n = 0; n < 3; n++) assert.is((await call(fresh, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(0x2000 + n) })).status, 200);
  } finally {
    await rig.close();
  }
});

test.run();
