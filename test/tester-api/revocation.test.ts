// Revoking a tester takes effect at once (issue 9, item 11): the tester API keeps no registry
// cache for authorisation, so the request right after `pksctl tester revoke` is refused. The
// rig runs with the default configuration (no cache setting of its own).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call, startRig, type Rig } from './fixture.js';

const test = suite<{ rig: Rig }>('tester-api: revocation');

test.before(async (ctx) => {
  ctx.rig = await startRig();
});
test.after(async (ctx) => {
  await ctx.rig?.close();
});

test('a request 30 ms after the revocation is refused, on the same keep-alive connection', async ({ rig }) => {
  const c = rig.client('alice');
  assert.is((await call(c, 'GET', '/v1/history')).status, 200);
  // what `pksctl tester revoke alice` does in the keystore's registry
  rig.stub.testers.set('alice', { ...rig.stub.testers.get('alice')!, revoked: true });
  await new Promise((r) => setTimeout(r, 30));
  const r = await call(c, 'GET', '/v1/history');
  assert.is(r.status, 403);
  assert.is(r.body.code, 'PKS_TESTER_UNKNOWN');
  rig.stub.testers.set('alice', { ...rig.stub.testers.get('alice')!, revoked: false });
  assert.is((await call(c, 'GET', '/v1/history')).status, 200, 'a re-granted tester gets in again at once');
});

test.run();
