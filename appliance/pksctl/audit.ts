// pksctl audit verify: re-walks the keystore's hash chain and checks every signed checkpoint
// against the audit public key taken from the vault (or a PEM file), never from the store.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

export async function auditCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { data: { type: 'string' }, 'audit-key': { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals[0] !== 'verify' || positionals.length !== 1) throw pksError('PKS_BAD_REQUEST', 'usage: pksctl audit verify [--data DIR] [--audit-key PEM] [--json]');
  const dir = values.data ?? process.env.PKS_KEYSTORE_DATA ?? '/var/lib/pks/keystore/data';
  let key: KeyObject;
  if (values['audit-key']) {
    key = createPublicKey(readFileSync(values['audit-key'], 'utf8'));
  } else {
    const vault = ipcClient(socketPath('vault', 'pksctl'), { connections: 1 });
    try {
      const r = await vault.call<{ spki: string }>('public-key', { name: 'audit' });
      key = createPublicKey({ key: Buffer.from(r.spki, 'base64'), format: 'der', type: 'spki' });
    } finally {
      await vault.close();
    }
  }
  const { openDbs } = await import('../../services/keystore/db.js');
  const { verifyAudit } = await import('../../services/keystore/audit.js');
  const dbs = openDbs(dir, { readOnly: true });
  try {
    const r = verifyAudit(dbs, key);
    if (values.json) out(JSON.stringify(r));
    else {
      out(`audit chain: ${r.ok ? 'VERIFIED' : 'BROKEN'}`);
      out(`entries ${r.entries}, checkpoints ${r.checkpoints}, last signed checkpoint at ${r.lastCheckpointSeq} of ${r.headSeq} (unsigned tail ${r.unsignedTail})`);
      for (const p of r.problems) out(`  problem: ${p}`);
    }
    return r.ok ? 0 : 1;
  } finally {
    await dbs.root.close();
  }
}
