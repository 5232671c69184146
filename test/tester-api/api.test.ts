// The tester API over real mTLS against the keystore stub: who may do what, each endpoint's
// happy path, and every kind of bad input answered with a coded problem that reached nobody.
import { readFileSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { buildOpenApi, API_VERSION, OPENAPI_FILE } from '../../services/tester-api/openapi.js';
import { ROUTES } from '../../services/tester-api/routes.js';
import { POOL_A, POOL_B, POOL_C, call, startRig, uid, type Res, type Rig } from './fixture.js';

const test = suite<{ rig: Rig }>('tester-api: endpoints');

test.before(async (ctx) => {
  ctx.rig = await startRig();
});
test.after(async (ctx) => {
  await ctx.rig?.close();
});

const isProblem = (r: Res, status: number, code: string): void => {
  assert.is(r.status, status, `${code}: ${r.text}`);
  assert.match(String(r.headers['content-type']), /^application\/problem\+json/);
  assert.is(r.body.code, code);
  assert.is(r.body.status, status);
  assert.is(r.body.type, `urn:pks:error:${code}`);
  assert.type(r.body.title, 'string');
  assert.type(r.body.detail, 'string');
};

test('reserve, retry gets the same package, confirm with the right proof', async ({ rig }) => {
  const c = rig.client('alice');
  const r1 = await call(c, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(1) });
  assert.is(r1.status, 200, r1.text);
  assert.equal(Object.keys(r1.body).sort(), ['authKeyId', 'counter', 'flags', 'keyId', 'm1', 'm2', 'm3', 'packageId', 'pool', 'reused', 'uid'].sort());
  assert.is(r1.body.reused, false);
  assert.match(r1.body.m2, /^[0-9a-f]{64}$/);
  const sent = rig.stub.callsOf('reserve').at(-1) as Record<string, string>;
  // the station is the registry's: the keystore takes it from there, not from the tester API
  assert.equal(sent, { pool: POOL_A, uid: uid(1), tester: 'alice' });
  assert.is(rig.stub.packages.get(r1.body.packageId)!.station, 'st-alice');

  const r2 = await call(c, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(1).toUpperCase() });
  assert.is(r2.status, 200);
  assert.is(r2.body.packageId, r1.body.packageId);
  assert.is(r2.body.reused, true);

  const pkg = rig.stub.packages.get(r1.body.packageId)!;
  const ok = await call(c, 'POST', `/v1/she/packages/${r1.body.packageId}/confirm`, { m4: pkg.m4.toUpperCase(), m5: pkg.m5 });
  assert.is(ok.status, 200, ok.text);
  assert.equal(ok.body, { packageId: r1.body.packageId, state: 'INJECTED', verified: true });
});

test('a proof mismatch is 422 PKS_SHE_PROOF_MISMATCH and the key is burned', async ({ rig }) => {
  const c = rig.client('alice');
  const r = await call(c, 'POST', '/v1/she/packages', { pool: POOL_B, uid: uid(2) });
  const bad = await call(c, 'POST', `/v1/she/packages/${r.body.packageId}/confirm`, { m4: '00'.repeat(32), m5: '11'.repeat(16) });
  isProblem(bad, 422, 'PKS_SHE_PROOF_MISMATCH');
  assert.is(bad.body.state, 'BURNED');
  assert.is(bad.body.packageId, r.body.packageId);
  assert.is(rig.stub.packages.get(r.body.packageId)!.state, 'BURNED');
});

test('fail burns; history lists the tester own packages only', async ({ rig }) => {
  const c = rig.client('alice');
  const r = await call(c, 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(3) });
  const f = await call(c, 'POST', `/v1/she/packages/${r.body.packageId}/fail`, { reason: 'ECU did not answer M4' });
  assert.is(f.status, 200, f.text);
  assert.equal(f.body, { packageId: r.body.packageId, state: 'BURNED' });
  await call(rig.client('bob'), 'POST', '/v1/she/packages', { pool: POOL_C, uid: uid(4) });
  const h = await call(c, 'GET', '/v1/history?limit=2');
  assert.is(h.status, 200, h.text);
  assert.is(h.body.items.length, 2);
  assert.is(h.body.items[0].packageId, r.body.packageId);
  assert.ok(h.body.items.every((i: { station: string }) => i.station === 'st-alice'));
  assert.equal(rig.stub.callsOf('history').at(-1), { tester: 'alice', limit: 2 });
  const all = await call(c, 'GET', '/v1/history');
  assert.equal(rig.stub.callsOf('history').at(-1), { tester: 'alice', limit: 50 });
  assert.is(all.body.items.length, 3);
});

test('another tester cannot confirm or fail my package', async ({ rig }) => {
  const r = await call(rig.client('alice'), 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(5) });
  const f = await call(rig.client('bob'), 'POST', `/v1/she/packages/${r.body.packageId}/fail`, { reason: 'x' });
  isProblem(f, 404, 'PKS_NOT_FOUND');
  assert.is(rig.stub.packages.get(r.body.packageId)!.state, 'RESERVED');
});

test('unknown, revoked, lapsed testers and forbidden pools get coded 403s', async ({ rig }) => {
  const before = rig.api.metrics.authFailures;
  const body = { pool: POOL_A, uid: uid(6) };
  isProblem(await call(rig.client('stranger'), 'POST', '/v1/she/packages', body), 403, 'PKS_TESTER_UNKNOWN');
  isProblem(await call(rig.client('revoked'), 'POST', '/v1/she/packages', body), 403, 'PKS_TESTER_UNKNOWN');
  isProblem(await call(rig.client('lapsed'), 'POST', '/v1/she/packages', body), 403, 'PKS_TESTER_EXPIRED');
  isProblem(await call(rig.client('lapsed'), 'GET', '/v1/history'), 403, 'PKS_TESTER_EXPIRED');
  isProblem(await call(rig.client('bob'), 'POST', '/v1/she/packages', body), 403, 'PKS_POOL_FORBIDDEN');
  assert.is(rig.api.metrics.authFailures - before, 5);
  // the keystore refused them all in the reserve itself (it checks the grant): no package for that ECU
  assert.not.ok([...rig.stub.packages.values()].some((p) => p.uid === uid(6)));
  // and a confirm by a revoked tester is refused the same way, not answered
  isProblem(await call(rig.client('revoked'), 'POST', `/v1/she/packages/pkg-1/confirm`, { m4: '00'.repeat(32), m5: '00'.repeat(16) }), 403, 'PKS_TESTER_UNKNOWN');
  assert.is(rig.api.metrics.authFailures - before, 6);
});

test('bad input: coded 4xx problem, naming the field, and the keystore never called', async ({ rig }) => {
  const c = rig.client('alice');
  await call(c, 'GET', '/v1/history'); // warm: the registry lookup is the only expected call
  const mark = rig.stub.calls.filter((x) => x.verb !== 'tester-get').length;
  const cases: [string, 'GET' | 'POST', string, unknown, number, string, string?][] = [
    ['uid not hex', 'POST', '/v1/she/packages', { pool: POOL_A, uid: 'zz'.repeat(15) }, 400, 'PKS_BAD_HEX', 'uid'],
    ['uid too short', 'POST', '/v1/she/packages', { pool: POOL_A, uid: 'ab'.repeat(14) }, 400, 'PKS_BAD_HEX', 'uid'],
    ['uid too long', 'POST', '/v1/she/packages', { pool: POOL_A, uid: 'ab'.repeat(16) }, 400, 'PKS_BAD_HEX', 'uid'],
    ['uid a number', 'POST', '/v1/she/packages', { pool: POOL_A, uid: 12 }, 400, 'PKS_BAD_REQUEST', 'uid'],
    ['pool malformed', 'POST', '/v1/she/packages', { pool: 'oem1/../x', uid: uid(7) }, 400, 'PKS_BAD_REQUEST', 'pool'],
    ['missing pool', 'POST', '/v1/she/packages', { uid: uid(7) }, 400, 'PKS_BAD_REQUEST', 'pool'],
    ['extra field', 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(7), tester: 'bob' }, 400, 'PKS_BAD_REQUEST', 'tester'],
    ['array body', 'POST', '/v1/she/packages', [1], 400, 'PKS_BAD_REQUEST'],
    ['not JSON', 'POST', '/v1/she/packages', '{"pool":', 400, 'PKS_BAD_REQUEST'],
    ['huge body', 'POST', '/v1/she/packages', { pool: POOL_A, uid: uid(7), pad: 'x'.repeat(8000) }, 413, 'PKS_TOO_LARGE'],
    ['m4 short', 'POST', '/v1/she/packages/pkg-1/confirm', { m4: '00'.repeat(31), m5: '00'.repeat(16) }, 400, 'PKS_BAD_HEX', 'm4'],
    ['m5 missing', 'POST', '/v1/she/packages/pkg-1/confirm', { m4: '00'.repeat(32) }, 400, 'PKS_BAD_REQUEST', 'm5'],
    ['confirm extra', 'POST', '/v1/she/packages/pkg-1/confirm', { m4: '00'.repeat(32), m5: '00'.repeat(16), state: 'INJECTED' }, 400, 'PKS_BAD_REQUEST', 'state'],
    ['bad packageId', 'POST', '/v1/she/packages/..%2F..%2Fetc/confirm', { m4: '00'.repeat(32), m5: '00'.repeat(16) }, 400, 'PKS_BAD_REQUEST', 'packageId'],
    ['long packageId', 'POST', `/v1/she/packages/${'a'.repeat(120)}/fail`, { reason: 'x' }, 400, 'PKS_BAD_REQUEST', 'packageId'],
    ['reason empty', 'POST', '/v1/she/packages/pkg-1/fail', { reason: '' }, 400, 'PKS_BAD_REQUEST', 'reason'],
    ['reason control chars', 'POST', '/v1/she/packages/pkg-1/fail', { reason: 'a\u0000b' }, 400, 'PKS_BAD_REQUEST', 'reason'],
    ['reason too long', 'POST', '/v1/she/packages/pkg-1/fail', { reason: 'r'.repeat(201) }, 400, 'PKS_BAD_REQUEST', 'reason'],
    ['limit zero', 'GET', '/v1/history?limit=0', undefined, 400, 'PKS_BAD_REQUEST', 'limit'],
    ['limit huge', 'GET', '/v1/history?limit=100000', undefined, 400, 'PKS_BAD_REQUEST', 'limit'],
    ['limit text', 'GET', '/v1/history?limit=abc', undefined, 400, 'PKS_BAD_REQUEST', 'limit'],
    ['extra query', 'GET', '/v1/history?tester=bob', undefined, 400, 'PKS_BAD_REQUEST', 'tester'],
    ['csr no profile', 'POST', '/v1/ecu/certificates', { uid: uid(7), csr: 'x'.repeat(100) }, 400, 'PKS_BAD_REQUEST', 'profile'],
    ['csr profile not granted', 'POST', '/v1/ecu/certificates', { uid: uid(7), profile: 'oem1.bcm', csr: 'x'.repeat(100) }, 403, 'PKS_POOL_FORBIDDEN'],
    ['csr profile malformed', 'POST', '/v1/ecu/certificates', { uid: uid(7), profile: 'oem1.bcm.key4', csr: 'x'.repeat(100) }, 400, 'PKS_BAD_REQUEST', 'profile'],
    ['csr huge', 'POST', '/v1/ecu/certificates', { uid: uid(7), profile: 'oem1.bcm', csr: 'x'.repeat(20_000) }, 413, 'PKS_TOO_LARGE'],
    ['csr uid bad', 'POST', '/v1/ecu/certificates', { uid: 'nothex', profile: 'oem1.bcm', csr: 'x'.repeat(100) }, 400, 'PKS_BAD_HEX', 'uid'],
    ['unknown route', 'POST', '/v1/she/keys', { pool: POOL_A }, 404, 'PKS_NOT_FOUND'],
    ['wrong method', 'GET', '/v1/she/packages', undefined, 404, 'PKS_NOT_FOUND'],
  ];
  for (const [name, method, url, body, status, code, field] of cases) {
    const r = await call(c, method, url, body);
    assert.is(r.status, status, `${name}: ${r.text}`);
    assert.is(r.body?.code, code, `${name}: ${r.text}`);
    assert.match(String(r.headers['content-type']), /^application\/problem\+json/, name);
    if (field) assert.is(r.body.field, field, `${name}: ${r.text}`);
    assert.not.match(r.text, /node_modules|at \w+ \(|stack/i, name);
  }
  // text/plain instead of JSON
  const plain = await call(c, 'POST', '/v1/she/packages', 'pool=x', { 'content-type': 'text/plain' });
  isProblem(plain, 400, 'PKS_BAD_REQUEST');
  assert.is(rig.stub.calls.filter((x) => x.verb !== 'tester-get').length, mark, 'no keystore verb was called');
});

test('keystore errors pass their code; an unreachable keystore is 503 PKS_SERVICE_UNAVAILABLE', async ({ rig }) => {
  const c = rig.client('alice');
  rig.stub.stock.set(POOL_B, 0);
  isProblem(await call(c, 'POST', '/v1/she/packages', { pool: POOL_B, uid: uid(8) }), 503, 'PKS_POOL_EMPTY');
  rig.stub.stock.delete(POOL_B);
  rig.stub.failing.set('reserve', 'PKS_STORE_FAILURE');
  const sf = await call(c, 'POST', '/v1/she/packages', { pool: POOL_B, uid: uid(8) });
  isProblem(sf, 503, 'PKS_STORE_FAILURE');
  assert.is(sf.body.detail, 'storage failure', 'an upstream detail that is not for testers is replaced by the title');
  rig.stub.failing.set('reserve', 'PKS_IPC_UNAVAILABLE');
  const un = await call(c, 'POST', '/v1/she/packages', { pool: POOL_B, uid: uid(8) });
  isProblem(un, 503, 'PKS_SERVICE_UNAVAILABLE');
  assert.is(un.body.retry, true);
  rig.stub.failing.clear();
});

test('health and the OpenAPI document (served = committed = generated, every route in it)', async ({ rig }) => {
  const c = rig.client('alice');
  const h = await call(c, 'GET', '/v1/health');
  assert.is(h.status, 200);
  assert.equal(h.body, { ready: true });
  // health needs only a tester-CA certificate, not a registration
  assert.equal((await call(rig.client('stranger'), 'GET', '/v1/health')).body, { ready: true });
  const o = await call(c, 'GET', '/v1/openapi.json');
  assert.is(o.status, 200);
  assert.match(String(o.headers['content-type']), /^application\/json/);
  const committed = readFileSync(OPENAPI_FILE, 'utf8');
  assert.is(o.text, committed);
  assert.equal(JSON.parse(committed), JSON.parse(JSON.stringify(buildOpenApi(API_VERSION))), 'openapi.json is stale: regenerate it (see openapi.ts)');
  const doc = JSON.parse(committed);
  for (const r of ROUTES) {
    const p = r.url.replace(/:([A-Za-z]+)/g, '{$1}');
    assert.ok(doc.paths[p]?.[r.method.toLowerCase()], `${r.method} ${r.url} in openapi.json`);
  }
});

test('health says not ready when the keystore is gone', async () => {
  const rig = await startRig();
  try {
    await rig.stub.close();
    const h = await call(rig.client('alice'), 'GET', '/v1/health');
    assert.equal(h.body, { ready: false });
    isProblem(await call(rig.client('alice'), 'GET', '/v1/history'), 503, 'PKS_SERVICE_UNAVAILABLE');
  } finally {
    await rig.close();
  }
});

test.run();
