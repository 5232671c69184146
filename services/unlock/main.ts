// pks-unlock: ECU unlock tokens for people with individual certificates (HTTPS/mTLS on its own
// port, default 9443), signed by token keys in the HSM through the vault, every step on record
// in the keystore first. It holds no key material and no state of its own.
import path from 'node:path';
import { loadConfig } from '../../appliance/config.js';
import { ipcClient, startIpcServer } from '../../appliance/ipc.js';
import { runDir, socketPath } from '../../appliance/paths.js';
import { runService } from '../../appliance/service.js';
import { UNLOCK_LOCAL_CALLERS, unlockAdminVerbs } from './admin-verbs.js';
import { createUnlockApi } from './app.js';
import { loadUnlockTls, unlockSchema, type UnlockConfig } from './config.js';
import { Unlock } from './unlock.js';

await runService('unlock', async (log) => {
  const cfg = loadConfig<UnlockConfig>(unlockSchema);
  const tls = loadUnlockTls(cfg);
  const keystore = ipcClient(socketPath('keystore', 'unlock'), { timeoutMs: cfg.ipc.timeoutMs, connections: 16 });
  const vault = ipcClient(socketPath('vault', 'unlock'), { timeoutMs: cfg.ipc.timeoutMs, connections: 8 });
  const unlock = new Unlock(cfg, keystore, vault, log);
  // READY only when the vault answers with the user CA: without it no one could log in anyway;
  // a vault that is not there yet makes start fail, and systemd tries again
  const userCa = await unlock.userCa();
  await unlock.publicKeys();
  const api = await createUnlockApi({ cfg, tls, userCa, unlock, log });
  const addr = await api.listen();
  log.info('listening', { host: addr.address, port: addr.port });
  const local = await startIpcServer({
    service: 'unlock',
    dir: path.join(runDir(), 'unlock'),
    verbs: unlockAdminVerbs(unlock),
    callers: UNLOCK_LOCAL_CALLERS,
    ...(cfg.ipc.groups ? { groups: cfg.ipc.groups as Record<string, number> } : {}),
    log,
  });
  return {
    status: () => `serving on ${addr.address}:${addr.port}, ${unlock.counters.tokens} tokens, ${unlock.counters.denied} denied`,
    async stop() {
      await local.close();
      await api.close();
      await Promise.all([keystore.close(), vault.close()]);
    },
  };
});
