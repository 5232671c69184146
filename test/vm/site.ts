// What the host's tests share with the dev image's site (scripts/image/dev-site.sh): the KMS's
// batch signer, the testers' client certificates, the pool, and the ECUs' master key.
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadSigner, type Signer } from '../../scripts/plant/batch.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SITE_HOST = path.join(ROOT, '.cache/image/dev-site/host');
export const BOX_ID = 'box-vm-1';
export const POOL = 'oem1.bcm.key4';
export const TESTERS = ['tester-vm-1', 'tester-vm-2'] as const;

export const kmsSigner = (): Signer =>
  loadSigner(readFileSync(path.join(SITE_HOST, 'kms-batch-signer.key'), 'utf8'), readFileSync(path.join(SITE_HOST, 'kms-batch-signer.crt'), 'utf8'));

export const testerCred = (cn: string): { cn: string; key: string; cert: string } => ({
  cn,
  key: readFileSync(path.join(SITE_HOST, `${cn}.key`), 'utf8'),
  cert: readFileSync(path.join(SITE_HOST, `${cn}.crt`), 'utf8'),
});

/** The pool's MASTER_ECU_KEY (the batch's auth key), made once per test state directory. */
export function masterKey(state: string): Buffer {
  const f = path.join(state, 'master.key');
  if (!existsSync(f)) writeFileSync(f, randomBytes(16).toString('hex') + '\n', { mode: 0o600 });
  return Buffer.from(readFileSync(f, 'utf8').trim(), 'hex');
}
