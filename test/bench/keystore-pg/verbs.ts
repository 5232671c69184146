// The baseline's verbs: the subset of the keystore's IPC contract (services/keystore/verbs.ts)
// that the tester API and the bench use, with the same request schemas, so the real tester
// API runs against it unchanged.
import type { VerbTable } from '../../../appliance/ipc.js';
import { keystoreVerbs } from '../../../services/keystore/verbs.js';
import type { TesterRecord } from '../../../appliance/contracts/keystore.js';
import type { PgKeystore } from './store.js';

const USED = ['reserve', 'confirm', 'tester-get', 'tester-put', 'stats', 'import-chunk'] as const;

export function keystorePgVerbs(ks: PgKeystore): VerbTable {
  // schemas come from the real keystore's table; only the handlers differ
  // a stub store: building the table opens the unlock databases, which the schemas do not need
  const real = keystoreVerbs({ dbs: { root: { openDB: () => ({}) } } } as never);
  const schema = (v: (typeof USED)[number]) => ({ request: real[v]!.request, ...(real[v]!.maxBytes ? { maxBytes: real[v]!.maxBytes } : {}) });
  return {
    reserve: { ...schema('reserve'), handler: (b: { pool: string; uid: string; tester: string; station: string }) => ks.reserve(b) },
    confirm: { ...schema('confirm'), handler: (b: { packageId: string; tester: string; m4: string; m5: string }) => ks.confirm(b.packageId, b.tester, b.m4, b.m5) },
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
