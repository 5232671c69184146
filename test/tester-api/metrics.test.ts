// Plant monitoring (issue 16 §4): the tester API's OpenMetrics endpoint, scraped over HTTP from
// a real box (vault on SoftHSM, keystore on LMDB, the tester API process over mTLS) after real
// issuance, a retry and a refusal, and parsed strictly as OpenMetrics text.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { request } from 'undici';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { startTesterApi, type TesterApiHandle } from '../../scripts/plant/tester-api.js';
import { freePort } from '../helpers/ports.js';
import { parseOpenMetrics } from '../helpers/openmetrics.js';

const POOL = 'oem1.bcm.key4';
const OTHER = 'oem1.gw.key5';

const s = suite<{ box: Box; api: TesterApiHandle; port: number }>('OpenMetrics endpoint of the tester API');
s.before(async (c) => {
  c.box = await startBox({ pools: [POOL, OTHER].map((pool) => ({ pool, minimum: 3, reorder: 10 })) });
  await c.box.importChunks(c.box.batch('m-1', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys: randomSheKeys('m1', 12) }));
  c.port = await freePort();
  c.api = await startTesterApi({
    dir: path.join(c.box.base, 'tester-api'),
    runDir: c.box.runDir,
    logDir: c.box.logDir,
    testers: [{ cn: 'eol-metrics', station: 'line1', pools: [POOL] }],
    keystoreAdmin: c.box.keystore.client('pksctl'),
    vault: c.box.vault.client('tester-api'),
    metricsPort: c.port,
  });
});
s.after(async (c) => {
  await c.api?.stop();
  await c.box?.stop();
});

s('a scrape after issuance, a retry and a refusal: stock per pool, issuance, errors, latency', async (c) => {
  const t = c.api.client(c.api.testers[0]!);
  const reserve = async (pool: string, uid: string): Promise<number> => {
    const r = await t.request({ method: 'POST', path: '/v1/she/packages', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pool, uid }) });
    await r.body.text();
    return r.statusCode;
  };
  const uid = (n: number): string => n.toString(16).padStart(30, '0');
  assert.is(await reserve(POOL, uid(1)), 200);
  assert.is(await reserve(POOL, uid(2)), 200);
  assert.is(await reserve(POOL, uid(1)), 200, 'a retry: the same package, not a new key');
  assert.is(await reserve(OTHER, uid(3)), 403, 'pool not granted');

  const r = await request(`http://127.0.0.1:${c.port}/metrics`);
  assert.is(r.statusCode, 200);
  assert.match(String(r.headers['content-type']), /^application\/openmetrics-text; version=1\.0\.0/);
  const m = parseOpenMetrics(await r.body.text());

  const stock = m.get('pks_stock_keys')!;
  assert.is(stock.type, 'gauge');
  const stockOf = (pool: string, state: string): number | undefined => stock.samples.find((x) => x.labels.pool === pool && x.labels.state === state)?.value;
  assert.is(stockOf(POOL, 'available'), 10);
  assert.is(stockOf(POOL, 'reserved'), 2);
  assert.is(stockOf(OTHER, 'available'), 0);
  assert.is(m.get('pks_stock_minimum')!.samples.find((x) => x.labels.pool === POOL)?.value, 3);

  const issued = m.get('pks_keys_issued')!;
  assert.is(issued.type, 'counter');
  assert.equal(issued.samples.filter((x) => x.name === 'pks_keys_issued_total').map((x) => [x.labels.pool, x.value]), [[POOL, 2]]);

  const responses = m.get('pks_tester_responses')!.samples.filter((x) => x.name === 'pks_tester_responses_total');
  const of = (code: string): number => responses.filter((x) => x.labels.route === '/v1/she/packages' && x.labels.code === code).reduce((a, x) => a + x.value, 0);
  assert.is(of('ok'), 3);
  assert.is(of('PKS_POOL_FORBIDDEN'), 1);
  assert.is(m.get('pks_tester_auth_failures')!.samples[0]!.value, 1);

  const lat = m.get('pks_tester_request_duration_seconds')!;
  assert.is(lat.type, 'histogram');
  const ok = lat.samples.filter((x) => x.labels.route === '/v1/she/packages' && x.labels.status === '200');
  const inf = ok.find((x) => x.name.endsWith('_bucket') && x.labels.le === '+Inf')!.value;
  assert.is(inf, 3);
  assert.is(ok.find((x) => x.name.endsWith('_count'))!.value, 3);
  const buckets = ok.filter((x) => x.name.endsWith('_bucket')).map((x) => x.value);
  assert.ok(buckets.every((v, i) => i === 0 || v >= buckets[i - 1]!), 'buckets are cumulative');
  assert.ok(ok.find((x) => x.name.endsWith('_sum'))!.value > 0);

  const nf = await request(`http://127.0.0.1:${c.port}/other`);
  assert.is(nf.statusCode, 404);
  await nf.body.text();
});

s.run();
