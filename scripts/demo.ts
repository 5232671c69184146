// The plant-in-a-box: the appliance's services and the real components around them, started
// on this machine in a temporary directory, a production line run against them, a report.
//   ./build.sh demo [--testers N] [--ecus N]   run to the end, clean up, exit 0;
//                                              the last line is one JSON object
//   ./build.sh demo --keep                     leave the stack running and say how to poke at it
import { createPublicKey, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { verifyAudit } from '../services/keystore/audit.js';
import type { StatsResponse } from '../services/keystore/contract.js';
import { openDbs } from '../services/keystore/db.js';
import { randomSheKeys } from './plant/batch.js';
import { startBox } from './plant/box.js';
import { runLine } from './plant/line.js';
import { startTesterApi } from './plant/tester-api.js';

const { values } = parseArgs({
  options: { keep: { type: 'boolean' }, testers: { type: 'string', default: '8' }, ecus: { type: 'string', default: '400' } },
  strict: true,
});
const testersN = Number(values.testers);
const ecusN = Number(values.ecus);
if (!Number.isInteger(testersN) || testersN < 1 || testersN > 256 || !Number.isInteger(ecusN) || ecusN < 1 || ecusN > 1_000_000) {
  console.error('demo: --testers 1..256, --ecus 1..1000000');
  process.exit(2);
}
const say = (s = ''): void => console.log(s);
const base = await mkdtemp(path.join(os.tmpdir(), 'pks-demo-'));

const POOLS = [
  { pool: 'oem1.bcm.key4', keyId: 4, masterKey: randomBytes(16) },
  { pool: 'oem1.gateway.key5', keyId: 5, masterKey: randomBytes(16) },
];
const perPool = Math.ceil(ecusN / POOLS.length) + 50;

say(`== plant-in-a-box in ${base}`);
const box = await startBox({ base, boxId: 'box-plant1-01', pools: POOLS.map((p) => ({ pool: p.pool, minimum: Math.ceil(perPool / 5), reorder: perPool })), checkpointEvery: 100 });
const cleanup = async (): Promise<void> => {
  await api?.stop().catch(() => {});
  await box.stop().catch(() => {});
};
let api: Awaited<ReturnType<typeof startTesterApi>> | undefined;
try {
  say(`vault: ready on a fresh SoftHSM token; keystore: LMDB in ${box.keystore.dataDir}`);
  // the KMS's batches for this box, one per pool, encrypted to its transport key and signed
  for (const [i, p] of POOLS.entries()) {
    const chunks = box.batch(`demo-batch-${i + 1}`, { pool: p.pool, keyId: p.keyId, authKeyId: 1, counter: 1, flags: 0, authKey: p.masterKey, keys: randomSheKeys(`demo${i + 1}`, perPool) }, 500);
    const res = await box.importChunks(chunks);
    say(`imported batch demo-batch-${i + 1}: ${res.reduce((a, r) => a + r.imported, 0)} keys for ${p.pool} in ${chunks.length} signed chunks`);
  }
  const admin = box.keystore.client('pksctl');
  const testers = Array.from({ length: testersN }, (_, i) => ({ cn: `eol-tester-${String(i + 1).padStart(2, '0')}`, station: `line1-st${i + 1}`, pools: POOLS.map((p) => p.pool) }));
  api = await startTesterApi({ dir: path.join(base, 'tester-api'), runDir: box.runDir, logDir: box.logDir, testers, keystoreAdmin: admin, vault: box.vault.client('tester-api') });
  say(`tester-api: mutual TLS on ${api.url}, ${testersN} testers registered`);

  say(`\n== running the line: ${testersN} testers, ${ecusN} ECUs (every 50th ECU fails once and is reworked)`);
  const line = await runLine({ api, testers: api.testers, pools: POOLS.map((p) => ({ pool: p.pool, masterKey: p.masterKey })), ecus: ecusN, failEvery: 50 });
  say(`injected ${line.injected}/${line.ecus} ECUs in ${line.seconds.toFixed(1)} s (${(line.injected / line.seconds).toFixed(0)}/s), p50 ${line.p50_ms} ms, p99 ${line.p99_ms} ms`);
  say(`verified proofs ${line.verified}, burned keys ${line.burned}, keys issued to two ECUs ${line.duplicates}`);

  const stats = (await admin.call<StatsResponse>('stats')).pools;
  say('\n== stock');
  for (const [p, s] of Object.entries(stats)) say(`${p.padEnd(20)} available ${s.available}, reserved ${s.reserved}, injected ${s.injected}, burned ${s.burned} (burn rate ${(s.burnRate * 100).toFixed(1)} %)`);

  await box.keystore.client('uplink').call('checkpoint', {});
  const auditSpki = Buffer.from((await box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
  const dbs = openDbs(box.keystore.dataDir, { readOnly: true });
  const audit = verifyAudit(dbs, createPublicKey({ key: auditSpki, format: 'der', type: 'spki' }));
  await dbs.root.close();
  say(`\n== audit: ${audit.ok ? 'VERIFIED' : 'BROKEN'}: ${audit.entries} entries, ${audit.checkpoints} checkpoints signed by the HSM audit key`);

  const summary = {
    ecus: line.ecus,
    injected: line.injected,
    verified: line.verified,
    burned: line.burned,
    duplicates: line.duplicates,
    p50_ms: line.p50_ms,
    p99_ms: line.p99_ms,
    audit_ok: audit.ok,
  };
  if (values.keep) {
    say(`\nThe stack keeps running (Ctrl-C stops it). Try:`);
    say(`  PKS_RUN_DIR=${box.runDir} npx pksctl vault status`);
    say(`  PKS_RUN_DIR=${box.runDir} npx pksctl audit verify --data ${box.keystore.dataDir}`);
    say(`  curl -s --unix-socket ${box.runDir}/keystore/pksctl.sock -XPOST -H 'content-type: application/json' -d '{}' http://x/v1/stats`);
    say(`  curl -s --cacert ${base}/tester-api/pki/box-ca.crt --cert ${base}/tester-api/pki/${api.testers[0]!.cn}.crt --key ${base}/tester-api/pki/${api.testers[0]!.cn}.key ${api.url}/v1/history`);
    say(`Logs: ${box.logDir}/*.log`);
    say(JSON.stringify(summary));
    const stop = async (): Promise<void> => {
      await cleanup();
      process.exit(0);
    };
    process.on('SIGINT', () => void stop());
    process.on('SIGTERM', () => void stop());
  } else {
    await cleanup();
    await rm(base, { recursive: true, force: true });
    say(JSON.stringify(summary));
    if (summary.duplicates !== 0 || summary.injected !== summary.ecus || !summary.audit_ok) process.exitCode = 1;
  }
} catch (e) {
  console.error('demo failed:', e);
  console.error(`logs kept in ${base}`);
  await cleanup();
  process.exit(1);
}
