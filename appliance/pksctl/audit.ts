// pksctl audit verify: re-walks the keystore's hash chain, checks every signed checkpoint
// against the audit public key taken from the vault (or a PEM file), and every anchor the KMS
// signed against the pinned KMS CA: never against anything taken from the store itself.
// "VERIFIED" only up to the last checkpoint the KMS anchored (issue 9); what follows is counted
// as not anchored; an empty or never-anchored history is "NOT VERIFIED" (exit 3), a broken one
// "BROKEN" (exit 1).
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadTrustAnchor } from '../batch-format.js';
import { pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

function kmsCaFile(given: string | undefined): string {
  if (given) return given;
  if (process.env.PKS_KMS_CA) return process.env.PKS_KMS_CA;
  try {
    const cfg = JSON.parse(readFileSync(process.env.PKS_KEYSTORE_CONFIG ?? '/etc/pks/keystore.json', 'utf8')) as { kmsCa?: unknown };
    if (typeof cfg.kmsCa === 'string') return cfg.kmsCa;
  } catch {
    // no keystore config here: the option is then required
  }
  throw pksError('PKS_BAD_REQUEST', 'the pinned KMS CA is needed to check anchors: --kms-ca FILE');
}

export async function auditCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { data: { type: 'string' }, 'audit-key': { type: 'string' }, 'kms-ca': { type: 'string' }, box: { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  const usage = 'usage: pksctl audit verify [--data DIR] [--audit-key PEM --box ID] [--kms-ca PEM] [--json]';
  if (positionals[0] !== 'verify' || positionals.length !== 1) throw pksError('PKS_BAD_REQUEST', usage);
  const dir = values.data ?? process.env.PKS_KEYSTORE_DATA ?? '/var/lib/pks/keystore/data';
  let key: KeyObject;
  let boxId = values.box;
  if (values['audit-key']) {
    if (!boxId) throw pksError('PKS_BAD_REQUEST', usage);
    key = createPublicKey(readFileSync(values['audit-key'], 'utf8'));
  } else {
    const vault = ipcClient(socketPath('vault', 'pksctl'), { connections: 1 });
    try {
      const r = await vault.call<{ spki: string }>('public-key', { name: 'audit' });
      key = createPublicKey({ key: Buffer.from(r.spki, 'base64'), format: 'der', type: 'spki' });
      boxId ??= (await vault.call<{ boxId: string }>('status', {})).boxId;
    } finally {
      await vault.close();
    }
  }
  const trust = loadTrustAnchor(readFileSync(kmsCaFile(values['kms-ca']), 'utf8'));
  const { openDbs } = await import('../../services/keystore/db.js');
  const { verifyAnchored } = await import('../../services/keystore/audit-anchor.js');
  const dbs = openDbs(dir, { readOnly: true });
  try {
    const r = verifyAnchored(dbs, key, trust, boxId);
    if (values.json) out(JSON.stringify(r));
    else {
      out(`audit chain: ${!r.ok ? 'BROKEN' : r.verified ? `VERIFIED up to entry ${r.anchoredSeq} (anchored at the KMS)` : `NOT VERIFIED: ${r.unverified}`}`);
      out(`entries ${r.entries}, checkpoints ${r.checkpoints} (last at ${r.lastCheckpointSeq}), anchors ${r.anchors}; ${r.notAnchored} of ${r.headSeq} entries not anchored yet (${r.unsignedTail} not even signed)`);
      for (const p of r.problems) out(`  problem: ${p}`);
    }
    return !r.ok ? 1 : r.verified ? 0 : 3;
  } finally {
    await dbs.root.close();
  }
}
