// The host's part of the VM's setup, after the box's own first-boot setup: registers the
// testers (keystore tester-put) and imports SHE keys with `pksctl import`, as plant IT would
// from a batch file, the batch made here (the KMS's side) against the VM vault's transport key.
// Usage: node --import tsx test/vm/provision.ts --state DIR [--keys N] [--top-up MIN]
//   --top-up MIN: import only when fewer than MIN keys are available.
// Prints one JSON line: {"imported":N,"available":N}.
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildBatch, randomSheKeys } from '../../scripts/plant/batch.js';
import { guest } from './guest.js';
import { BOX_ID, POOL, TESTERS, kmsSigner, masterKey } from './site.js';

const { values } = parseArgs({ options: { state: { type: 'string' }, keys: { type: 'string', default: '1500' }, 'top-up': { type: 'string' } }, strict: true });
if (!values.state) throw new Error('usage: provision.ts --state DIR [--keys N] [--top-up MIN]');
const n = Number(values.keys);
const g = guest(values.state);

type Stats = { pools: Record<string, { available: number }> };
const available = async (): Promise<number> => (await g.ipc<Stats>('keystore', 'stats')).pools[POOL]?.available ?? 0;

// the box's CA, made by its setup: what the testers verify the tester API's certificate with
// (a top-up after a reboot has both already)
const topUp = values['top-up'] !== undefined;
if (!topUp) writeFileSync(path.join(values.state, 'box-ca.crt'), await g.sh('cat /etc/pks/tls/box-ca.crt'));
for (const cn of topUp ? [] : TESTERS) {
  await g.ipc('keystore', 'tester-put', { cn, station: `line-1-${cn.slice(-1)}`, pools: [POOL], expiresAt: new Date(Date.now() + 365 * 86_400_000).toISOString(), revoked: false });
}
let imported = 0;
const before = await available();
if (!topUp || before < Number(values['top-up'])) {
  const { spki } = await g.ipc<{ spki: string }>('vault', 'public-key', { name: 'transport' });
  const batchId = `vm-${Date.now()}-${randomBytes(3).toString('hex')}`;
  const chunks = buildBatch({
    batchId,
    boxId: BOX_ID,
    transportSpki: Buffer.from(spki, 'base64'),
    signer: kmsSigner(),
    set: { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: masterKey(values.state), keys: randomSheKeys(batchId, n) },
    chunkSize: 500,
  });
  const file = `/var/tmp/${batchId}.jsonl`;
  await g.put(file, Buffer.from(chunks.map((c) => JSON.stringify(c)).join('\n') + '\n'));
  await g.sh(`pksctl import ${file} --json && rm -f ${file}`, 300);
  imported = n;
}
process.stdout.write(JSON.stringify({ imported, available: await available() }) + '\n');
