// The plant-in-a-box (see scripts/plant/plant.ts for what runs and in which order).
//   ./build.sh demo [--testers N] [--ecus N]   run to the end, clean up, exit 0;
//                                              the last line is one JSON object
//   ./build.sh demo --keep                     leave the stack running and say how to poke at it
import { createPublicKey } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { verifyAudit } from '../services/keystore/audit.js';
import type { StatsResponse } from '../appliance/contracts/keystore.js';
import { openDbs } from '../services/keystore/db.js';
import { runDoipPhase } from './plant/doip-phase.js';
import { runPlant, type Plant } from './plant/plant.js';
import { runUnlockPhase } from './plant/unlock-phase.js';
import { runClusterPhase } from './plant/cluster-phase.js';

const { values } = parseArgs({
  options: { keep: { type: 'boolean' }, testers: { type: 'string', default: '8' }, ecus: { type: 'string', default: '400' } },
  strict: true,
});
const testersN = Number(values.testers);
const ecusN = Number(values.ecus);
if (!Number.isInteger(testersN) || testersN < 1 || testersN > 256 || !Number.isInteger(ecusN) || ecusN < 40 || ecusN > 1_000_000) {
  console.error('demo: --testers 1..256, --ecus 40..1000000');
  process.exit(2);
}
const say = (s = ''): void => console.log(s);
const base = await mkdtemp(path.join(os.tmpdir(), 'pks-demo-'));
say(`== plant-in-a-box in ${base}`);
let plant: Plant | undefined;
// Ctrl-C during the run: stop the stack in order, then leave
const interrupted = async (): Promise<void> => {
  await plant?.stop();
  await rm(base, { recursive: true, force: true });
  process.exit(130);
};
if (!values.keep) {
  // killed children (scripts/plant/process.ts) leave their files behind: remove them too
  process.once('exit', () => rmSync(base, { recursive: true, force: true }));
  process.once('SIGINT', () => void interrupted());
  process.once('SIGTERM', () => void interrupted());
}
try {
  plant = await runPlant({ base, testers: testersN, ecus: ecusN, say });
  const { box, summary, smtp, kms } = plant;
  // part of the line injects over DoIP + UDS into simulated ECUs (scripts/plant/doip-phase.ts)
  const doipN = Math.max(10, Math.floor(ecusN / 20));
  summary.doip_injected = (await runDoipPhase({ api: plant.api, pools: plant.linePools, ecus: doipN, failEvery: 10, say })).doip_injected;
  say(`\n== line: ${summary.injected}/${summary.ecus} ECUs injected, p50 ${summary.p50_ms} ms, p99 ${summary.p99_ms} ms`);
  say(`proofs verified ${summary.verified}, keys burned ${summary.burned} (every 50th ECU failed once, got a fresh key), keys issued twice ${summary.duplicates}`);
  say(`rework on the strict SHE simulator: ${summary.reworked} ECUs loaded a key whose proof was lost and took the replacement (higher SHE counter); ${summary.occupied} ECUs whose slot already held a newer key refused the package (key burned, ECU to analysis)`);
  const stats = (await box.keystore.client('pksctl').call<StatsResponse>('stats')).pools;
  say('\n== stock');
  for (const [p, s] of Object.entries(stats))
    say(`${p.padEnd(20)} available ${s.available} (minimum ${s.minimum}), injected ${s.injected}, reported ${s.reported}, burned ${s.burned} (burn rate ${(s.burnRate * 100).toFixed(1)} %)`);
  say(`\n== KMS: ${summary.kms_verified} injections verified (ECU proofs checked against the keys it sent); ${summary.reorders} re-orders answered`);
  say(`== alert mails (${smtp.mails.length}) on the demo SMTP server 127.0.0.1:${smtp.port}:`);
  for (const m of smtp.mails) say(`   ${m.subject}`);

  // issue 14: unlock tokens on the same box (scripts/plant/unlock-phase.ts)
  const unlock = await runUnlockPhase(plant, base, say);
  const { svc: unlockSvc, ...unlockFigures } = unlock;
  Object.assign(summary, unlockFigures);
  const auditSpki = Buffer.from((await box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
  const dbs = openDbs(box.keystore.dataDir, { readOnly: true });
  const audit = verifyAudit(dbs, createPublicKey({ key: auditSpki, format: 'der', type: 'spki' }));
  await dbs.root.close();
  say(`== audit chain: ${audit.ok ? 'VERIFIED' : 'BROKEN'}: ${audit.entries} entries, ${audit.checkpoints} checkpoints signed by the HSM audit key`);
  summary.audit_ok = audit.ok;
  // issue 16 §2: a short cluster phase on two more boxes of another plant (scripts/plant/cluster-phase.ts)
  if (!values.keep) Object.assign(summary, await runClusterPhase(plant, base, say));

  if (values.keep) {
    say(`\nThe stack keeps running (Ctrl-C stops it). Try:`);
    say(`  export PKS_RUN_DIR=${box.runDir}`);
    say(`  npx pksctl vault status`);
    say(`  npx pksctl alerts --all`);
    say(`  npx pksctl audit verify --data ${box.keystore.dataDir}`);
    say(`  PKS_KMS_SOCKET=${kms.socket} node --import tsx scripts/fleet/main.ts list`);
    const t = plant.api.testers[0]!.cn;
    say(`  curl -s --cacert ${base}/tester-api/pki/box-ca.crt --cert ${base}/tester-api/pki/${t}.crt --key ${base}/tester-api/pki/${t}.key ${plant.api.url}/v1/history`);
    say(`Logs: ${box.logDir}/*.log`);
    say(JSON.stringify(summary));
    const stop = async (): Promise<void> => {
      await plant?.stop();
      process.exit(0);
    };
    process.on('SIGINT', () => void stop());
    process.on('SIGTERM', () => void stop());
  } else {
    await unlockSvc.stop();
    await plant.stop();
    await rm(base, { recursive: true, force: true });
    say(JSON.stringify(summary));
    const good = summary.duplicates === 0 && summary.injected === summary.ecus && summary.kms_verified === summary.injected && audit.ok && summary.doip_injected === doipN && summary.failover_ok === true;
    if (!good) process.exitCode = 1;
  }
} catch (e) {
  console.error('demo failed:', e);
  console.error(`logs kept in ${base}`);
  await plant?.stop();
  process.exit(1);
}
