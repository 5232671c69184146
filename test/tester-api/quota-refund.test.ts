// Issue 10 finding: a timed-out keystore call refunded the tester's quota although the keystore
// may have committed the reservation, so a tester whose calls time out got keys without limit.
// Only a definite refusal (the keystore committed nothing) gives quota back now.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { POOL_A, call, startRig, uid } from './fixture.js';

const test = suite('tester-api: quota refunds');

test('a timed-out reservation keeps its cost; a refused one refunds', async () => {
  const rig = await startRig({ limits: { newReservationsPerHour: 3 } });
  try {
    const c = rig.client('greedy');
    rig.stub.failing.set('reserve', 'PKS_IPC_TIMEOUT');
    for (let n = 0; n < 3; n++) assert.is((await call(c, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(0x7000 + n) })).status, 503);
    rig.stub.failing.delete('reserve');
    const r = await call(c, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(0x7100) });
    assert.is(r.status, 429, 'the three calls that may have committed spent the quota');
    assert.is(r.body.code, 'PKS_QUOTA_EXCEEDED');
    // the keystore's own quota answer passes through with its Retry-After
    const other = rig.client('ecu-station');
    rig.stub.failing.set('reserve', 'PKS_RESERVATIONS_OPEN');
    const open = await call(other, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(0x7200) });
    assert.equal([open.status, open.body.code], [429, 'PKS_RESERVATIONS_OPEN']);
    rig.stub.failing.delete('reserve');
  } finally {
    await rig.close();
  }
});

test.run();
