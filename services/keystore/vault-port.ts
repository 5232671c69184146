// The keystore's side of the vault: the few vault verbs it is allowed, over its own socket.
import type { IpcClient } from '../../appliance/ipc.js';
import type { SheCall, VaultPort } from './keystore.js';

export function ipcVaultPort(vault: IpcClient): VaultPort {
  return {
    async openBatch(batchId, epk) {
      const r = await vault.call<{ batchKey: string }>('batch-open', { batchId, epk });
      return Buffer.from(r.batchKey, 'base64');
    },
    shePrepare: (req: SheCall) => vault.call<{ m1: string; m2: string; m3: string }>('she-prepare', req),
    async sheVerify(req) {
      return (await vault.call<{ ok: boolean }>('she-verify', req)).ok;
    },
    async signCheckpoint(c) {
      const r = await vault.call<{ sig: string }>('audit-checkpoint', c);
      return Buffer.from(r.sig, 'base64');
    },
    async signVerificationFile(payload) {
      const r = await vault.call<{ sig: string }>('verification-file', { payload });
      return Buffer.from(r.sig, 'base64');
    },
    issueEcuCert: (r) => vault.call('ecu-cert-issue', r),
  };
}
