// A fresh SoftHSM2 token in a private temp dir, made by the same script the dev stack uses.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const script = path.join(root, 'scripts/softhsm-token.sh');

export const SOFTHSM_MODULE = process.env.PKCS11_MODULE ?? '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsmToken {
  dir: string;
  conf: string;
  module: string;
  label: string;
  pin: string;
  soPin: string;
  cleanup(): Promise<void>;
}

export async function makeToken(label = 'pks-test'): Promise<SoftHsmToken> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-softhsm-'));
  const pin = randomBytes(8).toString('hex');
  const soPin = randomBytes(8).toString('hex');
  try {
    const { stdout } = await run(script, [dir, label, soPin, pin], {
      env: { ...process.env, PKCS11_MODULE: SOFTHSM_MODULE },
      timeout: 30_000,
    });
    const m = /^export SOFTHSM2_CONF=(.+)$/m.exec(stdout);
    if (!m) throw new Error(`softhsm-token.sh printed no SOFTHSM2_CONF: ${stdout}`);
    return {
      dir,
      conf: m[1]!,
      module: SOFTHSM_MODULE,
      label,
      pin,
      soPin,
      cleanup: () => rm(dir, { recursive: true, force: true }),
    };
  } catch (e) {
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
}
