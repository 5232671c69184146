// Plant monitoring (issue 16 §4): the sentinel's alert states on its OpenMetrics endpoint. A real
// box (vault on SoftHSM, keystore on LMDB) with stock below a pool's minimum, the sentinel as its
// own process: the scrape, parsed, shows the stock-low warning open, and 0 for the other kinds.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { writePlantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { parseOpenMetrics, type Family } from '../helpers/openmetrics.js';
import { freePort } from '../helpers/ports.js';
import { startSmtp, type TestSmtp } from '../helpers/smtp.js';

const POOL = 'oem1.ecuM.4';

const s = suite<{ box: Box; smtp: TestSmtp; sentinel: Proc; port: number }>('OpenMetrics endpoint of the sentinel');
s.before(async (c) => {
  c.smtp = await startSmtp();
  c.box = await startBox({ pools: [{ pool: POOL, minimum: 10, reorder: 20 }] });
  await c.box.importChunks(c.box.batch('met-b1', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: randomBytes(16), keys: randomSheKeys('met', 5) }));
  const file = await writePlantSentinelConfig({ dir: path.join(c.box.base, 'sentinel'), boxId: c.box.boxId, smtpPort: c.smtp.port, keystoreDataDir: c.box.keystore.dataDir, everySeconds: 1 });
  c.port = await freePort();
  const cfg = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
  await writeFile(file, JSON.stringify({ ...cfg, metrics: { port: c.port } }));
  c.sentinel = startService('sentinel', { PKS_CONFIG: file, PKS_RUN_DIR: c.box.runDir }, c.box.logDir);
});
s.after(async (c) => {
  await c.sentinel?.stop();
  await c.box?.stop();
  await c.smtp?.stop();
});

s('a scrape shows the open stock-low warning, the other kinds at 0, the last run', async (c) => {
  const scrape = async (): Promise<Map<string, Family>> => {
    const r = await request(`http://127.0.0.1:${c.port}/metrics`);
    assert.is(r.statusCode, 200);
    assert.match(String(r.headers['content-type']), /^application\/openmetrics-text/);
    return parseOpenMetrics(await r.body.text());
  };
  const open = (m: Map<string, Family>, kind: string, severity: string): number | undefined => m.get('pks_alerts_open')?.samples.find((x) => x.labels.kind === kind && x.labels.severity === severity)?.value;
  const m = await waitFor('stock-low open', async () => {
    const m = await scrape().catch(() => undefined);
    // the alert opens during a run, the run's time is set when the run (mails included) ends
    return m && open(m, 'stock-low', 'warning') === 1 && m.get('pks_sentinel_last_run_timestamp_seconds')!.samples[0]!.value > 0 ? m : undefined;
  }, 30_000, 200);
  assert.is(m.get('pks_alerts_open')!.type, 'gauge');
  assert.is(open(m, 'stock-low', 'critical'), 0);
  assert.is(open(m, 'tpm', 'critical'), 0, 'a kind with nothing open is there, at 0');
  const last = m.get('pks_sentinel_last_run_timestamp_seconds')!.samples[0]!.value;
  assert.ok(Math.abs(last - Date.now() / 1000) < 60, `last run ${last}`);
  assert.ok(m.has('pks_alert_mails_queued'));
});

s.run();
