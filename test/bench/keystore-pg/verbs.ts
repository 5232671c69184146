// The baseline's verbs: the subset of the keystore's IPC contract (services/keystore/verbs.ts)
// that the tester API and the bench use, with the same request schemas, so the real tester
// API runs against it unchanged.
import type { VerbTable } from '../../../appliance/ipc.js';
import { keystoreVerbs } from '../../../services/keystore/verbs.js';
import type { ReserveRequest, TesterRecord } from '../../../appliance/contracts/keystore.js';
import { grantHolds } from '../../../services/keystore/grant.js';
import type { PgKeystore } from './store.js';

const USED = ['reserve', 'confirm', 'tester-get', 'tester-put', 'stats', 'import-chunk'] as const;

const registered = (ks: PgKeystore, cn: string): Promise<TesterRecord | undefined> =>
  ks.tester(cn).catch((e: { code?: string }) => {
    if (e.code === 'PKS_TESTER_UNKNOWN') return undefined;
    throw e;
  });

export function keystorePgVerbs(ks: PgKeystore): VerbTable {
  // schemas come from the real keystore's table; only the handlers differ
  // a stub store: building the table opens the unlock databases, which the schemas do not need
  const real = keystoreVerbs({ dbs: { root: { openDB: () => ({}) } } } as never);
  const schema = (v: (typeof USED)[number]) => ({ request: real[v]!.request, ...(real[v]!.maxBytes ? { maxBytes: real[v]!.maxBytes } : {}) });
  return {
    // the grant checked in the store, as the real keystore does (grant.ts): one read more per call
    reserve: {
      ...schema('reserve'),
      handler: async (b: ReserveRequest) => {
        const t = grantHolds(await registered(ks, b.tester), b.tester, Date.now(), b.pool);
        return ks.reserve({ pool: b.pool, uid: b.uid, tester: b.tester, station: t.station });
      },
    },
    confirm: {
      ...schema('confirm'),
      handler: async (b: { packageId: string; tester: string; m4: string; m5: string }) => {
        grantHolds(await registered(ks, b.tester), b.tester, Date.now());
        return ks.confirm(b.packageId, b.tester, b.m4, b.m5);
      },
    },
    'tester-get': { ...schema('tester-get'), handler: (b: { cn: string }) => ks.tester(b.cn) },
    'tester-put': {
      ...schema('tester-put'),
      handler: async (b: TesterRecord) => {
        await ks.putTester(b);
        return { ok: true };
      },
    },
    stats: { ...schema('stats'), handler: async () => ({ pools: await ks.stats() }) },
    'import-chunk': { ...schema('import-chunk'), handler: (b: { chunk: unknown }) => ks.importChunk(b.chunk) },
  };
}

export const KEYSTORE_PG_CALLERS: Readonly<Record<string, readonly string[]>> = Object.freeze({
  'tester-api': ['reserve', 'confirm', 'tester-get'],
  pksctl: ['stats', 'import-chunk', 'tester-put', 'tester-get'],
});
