// pks-vault: the only process that loads the PKCS#11 module or sees the PIN.
import path from 'node:path';
import { loadConfig, readCredential } from '../../appliance/config.js';
import { startIpcServer } from '../../appliance/ipc.js';
import { runDir } from '../../appliance/paths.js';
import { runService } from '../../appliance/service.js';
import { vaultSchema, type VaultConfig } from './config.js';
import type { EcuCaConfig } from './signed-structures.js';
import { Vault } from './vault.js';
import { DEFAULT_CALLERS, vaultVerbs } from './verbs.js';
import { registerUnlockKeys } from './unlock-keys.js';
import { startVaultGate } from './vault-gate.js';

await runService('vault', async (log) => {
  const cfg = loadConfig<VaultConfig>(vaultSchema);
  const pin = readCredential('hsm-pin', cfg.hsm.pinFile);
  if (cfg.unlock) registerUnlockKeys(cfg.unlock.tokenKeys);
  const vault = new Vault(
    { module: cfg.hsm.module, tokenLabel: cfg.hsm.tokenLabel, pin, ...(cfg.hsm.softhsm2Conf ? { softhsm2Conf: cfg.hsm.softhsm2Conf } : {}) },
    cfg.boxId,
    log,
    cfg.ecuCa as EcuCaConfig | undefined,
  );
  vault.start();
  // issue 12: no key operation until the application measurement is the provisioned one
  const g = cfg.gate;
  const gate = await startVaultGate(
    vault,
    cfg.boxId,
    g ? { record: g.recordFile, live: g.liveFile, writerUid: g.writerUid, maxAgeS: g.maxAgeSeconds } : null,
    (g?.everySeconds ?? 5) * 1000,
    log,
    g?.manifestKeyFile,
  );
  const ipc = await startIpcServer({
    service: 'vault',
    dir: path.join(runDir(), 'vault'),
    verbs: { ...vaultVerbs(vault), ...gate.verbs },
    callers: (cfg.ipc.callers as Record<string, readonly string[]> | undefined) ?? DEFAULT_CALLERS,
    ...(cfg.ipc.groups ? { groups: cfg.ipc.groups as Record<string, number> } : {}),
    log,
  });
  return {
    status: () => {
      const st = gate.status();
      if (!vault.ready) return `failing closed: ${String(vault.status().error)}`;
      return gate.gate && !st.open ? `failing closed: ${st.code} ${st.reason ?? ''}` : 'serving, HSM ready';
    },
    async stop() {
      gate.stop();
      await ipc.close();
      vault.stop();
    },
  };
});
