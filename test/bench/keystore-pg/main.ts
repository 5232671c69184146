// pks-keystore-pg: the PostgreSQL baseline of the keystore, for benchmarks only. It listens on
// the keystore's sockets (<runDir>/keystore/<caller>.sock) and calls the vault as the keystore
// does, so the tester API and the vault run unchanged in front of and behind it.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { loadTrustAnchor } from '../../../appliance/batch-format.js';
import { loadConfig } from '../../../appliance/config.js';
import { pksError } from '../../../appliance/errors.js';
import { ipcClient, startIpcServer } from '../../../appliance/ipc.js';
import { runDir, socketPath } from '../../../appliance/paths.js';
import { runService } from '../../../appliance/service.js';
import { keystorePgSchema, type KeystorePgConfig } from './config.js';
import { PgKeystore } from './store.js';
import { KEYSTORE_PG_CALLERS, keystorePgVerbs } from './verbs.js';

await runService('keystore-pg', async (log) => {
  const cfg = loadConfig<KeystorePgConfig>(keystorePgSchema);
  let caPem: string;
  try {
    caPem = readFileSync(cfg.kmsCa, 'utf8');
  } catch {
    throw pksError('PKS_CONFIG_INVALID', `kmsCa: ${cfg.kmsCa} cannot be read`);
  }
  const db = new pg.Pool({ host: cfg.pg.host, port: cfg.pg.port, database: cfg.pg.database, user: cfg.pg.user, max: cfg.pg.poolSize });
  db.on('error', (err) => log.warn('postgres connection error', { err }));
  const vault = ipcClient(socketPath('vault', 'keystore'), { timeoutMs: 10_000, connections: 32 });
  const ks = new PgKeystore(db, vault, loadTrustAnchor(caPem), cfg.boxId, new Set(cfg.pools));
  try {
    await ks.init();
  } catch (e) {
    throw pksError('PKS_STORE_FAILURE', 'postgres is not reachable', e);
  }
  const ipc = await startIpcServer({ service: 'keystore', dir: path.join(runDir(), 'keystore'), verbs: keystorePgVerbs(ks), callers: KEYSTORE_PG_CALLERS, log });
  return {
    status: () => 'serving (postgres baseline)',
    async stop() {
      await ipc.close();
      await vault.close();
      await db.end();
    },
  };
});
