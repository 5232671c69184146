// pks-keystore: the LMDB key buffer and the exactly-once issuance around it.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { loadTrustAnchor } from '../../appliance/batch-format.js';
import { loadConfig } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { ipcClient, startIpcServer } from '../../appliance/ipc.js';
import { runDir, socketPath } from '../../appliance/paths.js';
import { runService } from '../../appliance/service.js';
import { keystoreSchema, type KeystoreConfig } from './config.js';
import { openDbs } from './db.js';
import { checkDistinctTargets } from './pool-slot.js';
import { Keystore } from './keystore.js';
import { beginOutboxEpoch } from './outbox.js';
import { ipcVaultPort } from './vault-port.js';
import { KEYSTORE_CALLERS, keystoreVerbs } from './verbs.js';
import { Drain, UPDATE_CALLERS, updateVerbs, withDrain } from './update-verbs.js';
import { CLUSTER_CALLERS, clusterKeystoreVerbs } from './cluster-verbs.js';
import { ZEROIZE_CALLERS, zeroizeKeystoreVerbs } from './zeroize-verbs.js';

/** One caller table from several: each caller's verbs are the union of what the tables give it. */
const mergeCallers = (...tables: Readonly<Record<string, readonly string[]>>[]): Record<string, string[]> => {
  const out: Record<string, string[]> = {};
  for (const t of tables) for (const [caller, verbs] of Object.entries(t)) out[caller] = [...new Set([...(out[caller] ?? []), ...verbs])];
  return out;
};

await runService('keystore', async (log) => {
  // lmdb-js rejects a promise per write of a failed commit (a full disk), also of writes no
  // one awaits; the caller that did await it already got PKS_STORE_FULL. Anything else
  // unexpected still ends the process, and systemd restarts it.
  process.on('unhandledRejection', (e) => {
    if (/Commit failed/.test(String((e as Error)?.message))) {
      (e as { commitError?: Promise<unknown> }).commitError?.catch(() => {});
      log.warn('commit failed', { code: 'PKS_STORE_FAILURE' });
      return;
    }
    log.error('unhandled rejection', { err: e });
    process.exit(1);
  });
  const cfg = loadConfig<KeystoreConfig>(keystoreSchema);
  let caPem: string;
  try {
    caPem = readFileSync(cfg.kmsCa, 'utf8');
  } catch {
    throw pksError('PKS_CONFIG_INVALID', `kmsCa: ${cfg.kmsCa} cannot be read`);
  }
  const trust = loadTrustAnchor(caPem);
  checkDistinctTargets(cfg.pools.map((p) => p.pool), 'pools');
  const dbs = openDbs(cfg.dataDir, { mapSizeMb: cfg.mapSizeMb });
  // a new outbox epoch on disk before any outbox id of this run exists (outbox.ts)
  await beginOutboxEpoch(dbs);
  const vault = ipcClient(socketPath('vault', 'keystore'), { timeoutMs: 10_000, connections: 32 });
  const ks = new Keystore(
    dbs,
    ipcVaultPort(vault),
    trust,
    cfg.boxId,
    { checkpointEvery: cfg.audit.checkpointEvery, checkpointMs: cfg.audit.checkpointSeconds * 1000, reservationTtlMs: cfg.reservationTtlHours * 3_600_000, sweepMs: cfg.sweepSeconds * 1000, quotas: { ...cfg.quotas } },
    log,
  );
  for (const p of cfg.pools) await ks.setPool({ pool: p.pool, minimum: p.minimum, reorder: p.reorder, critical: p.critical ?? Math.floor(p.minimum / 4) });
  ks.start();
  const drain = new Drain();
  const ipc = await startIpcServer({
    service: 'keystore',
    dir: path.join(runDir(), 'keystore'),
    // the updater's drain and health check (update-verbs.ts)
    verbs: { ...withDrain(keystoreVerbs(ks), drain, ks), ...updateVerbs(ks, vault, drain), ...clusterKeystoreVerbs(ks, cfg.boxId), ...zeroizeKeystoreVerbs(ks, cfg.dataDir, cfg.boxId, () => process.kill(process.pid, 'SIGTERM')) },
    callers: mergeCallers(KEYSTORE_CALLERS, UPDATE_CALLERS, CLUSTER_CALLERS, ZEROIZE_CALLERS),
    ...(cfg.ipc.groups ? { groups: cfg.ipc.groups as Record<string, number> } : {}),
    log,
  });
  return {
    status: () => {
      const s = ks.stats();
      return `serving; ${Object.entries(s).map(([p, c]) => `${p}: ${c.available} available`).join(', ') || 'no pools'}`;
    },
    async stop() {
      await ipc.close();
      await ks.stop();
      await vault.close();
    },
  };
});
