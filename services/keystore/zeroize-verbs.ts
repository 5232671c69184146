// Issue 16 §3, step 3 of `pksctl zeroize` (appliance/pksctl/zeroize.ts): the keystore closes
// its LMDB environment and removes its files, then stops. Only for pksctl, only naming this box
// (the keystore checks what is asked), and only after the vault has destroyed the HSM keys, so
// that nothing the store held can be opened again. Idempotent: files already gone are fine.
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import type { VerbTable } from '../../appliance/ipc.js';
import { NAME } from '../../appliance/schema.js';
import type { Keystore } from './keystore.js';

export function zeroizeKeystoreVerbs(ks: Keystore, dataDir: string, boxId: string, stopService: () => void): VerbTable {
  return {
    'zeroize-wipe': {
      request: { type: 'object', additionalProperties: false, required: ['boxId'], properties: { boxId: NAME } },
      handler: async (b: { boxId: string }) => {
        if (b.boxId !== boxId) throw pksError('PKS_BAD_REQUEST', `this keystore belongs to ${boxId}, not ${b.boxId}`);
        await ks.stop();
        const removed: string[] = [];
        for (const f of await readdir(dataDir).catch(() => [] as string[])) {
          await rm(path.join(dataDir, f), { recursive: true, force: true });
          removed.push(f);
        }
        // answered first, then the service ends: no verb may reach a closed store
        setTimeout(stopService, 100).unref();
        return { wiped: true, removed };
      },
    },
  };
}

export const ZEROIZE_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({ pksctl: ['zeroize-wipe', 'outbox-peek'] });
