// The plant-in-a-box: every service of the appliance, and the real components around it,
// started on this machine in a temporary directory, run to the end, reported, cleaned up.
//   ./build.sh demo          run and exit 0 (the last line is one JSON object)
//   ./build.sh demo --keep   leave the stack running and say how to poke at it
import { mkdtemp, rm } from 'node:fs/promises';
import { createPublicKey } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { startVault } from './plant/vault.js';

const keep = process.argv.includes('--keep');
const base = await mkdtemp(path.join(os.tmpdir(), 'pks-demo-'));
const runDir = path.join(base, 'run');
const logDir = base;
const say = (s: string): void => console.log(s);

say(`plant-in-a-box in ${base}`);
const vault = await startVault({ dir: path.join(base, 'vault'), runDir, logDir, boxId: 'box-demo-1' });
const admin = vault.client('pksctl');
const status = await admin.call<{ ready: boolean; hsm: Record<string, unknown> }>('status');
say('\n== vault status');
say(JSON.stringify(status, null, 2));
say('\n== vault public keys');
for (const name of ['identity', 'transport', 'audit', 'ecu-ca']) {
  const { spki } = await admin.call<{ spki: string }>('public-key', { name });
  const pem = createPublicKey({ key: Buffer.from(spki, 'base64'), format: 'der', type: 'spki' }).export({ type: 'spki', format: 'pem' });
  say(`-- ${name}\n${String(pem).trim()}`);
}

const summary = { vault_ready: status.ready, keys: 4 };
if (keep) {
  say(`\nThe stack keeps running. Try:\n  PKS_RUN_DIR=${runDir} npx pksctl vault status\n  curl -s --unix-socket ${runDir}/vault/pksctl.sock -XPOST -H 'content-type: application/json' -d '{}' http://x/v1/status\nLogs: ${logDir}/*.log. Stop with Ctrl-C.`);
  const stop = async (): Promise<void> => {
    await vault.stop();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop());
  process.on('SIGTERM', () => void stop());
} else {
  await vault.stop();
  await rm(base, { recursive: true, force: true });
  say(JSON.stringify(summary));
}
