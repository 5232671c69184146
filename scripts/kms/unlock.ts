// The reference KMS's view of the fleet's unlock tokens: every `unlock` item of a box's
// verification file (grants, denials, onboarding, revocations, as the box's audit recorded them)
// kept per box and audit seq, so central ops can ask across the fleet who unlocked which ECU
// when (`pks-fleet tokens`). The file's audit-key signature was checked before anything here.
import type { Database } from 'lmdb';
import type { VerbTable } from '../../appliance/ipc.js';
import { NAME } from '../../appliance/schema.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';
import type { KmsStore } from './store.js';

export interface FleetUnlockRecord {
  boxId: string;
  auditSeq: number;
  ev: string;
  cn: string;
  at: string;
  [k: string]: unknown;
}

const dbs = new WeakMap<KmsStore, Database<FleetUnlockRecord, [string, number]>>();
const unlockDb = (store: KmsStore): Database<FleetUnlockRecord, [string, number]> => {
  let d = dbs.get(store);
  if (!d) dbs.set(store, (d = store.root.openDB({ name: 'unlocks' })));
  return d;
};

/** Inside the verification file's transaction; a malformed item throws and is rejected. */
export function takeUnlock(store: KmsStore, boxId: string, item: OutboxItem): void {
  const b = item.body as Record<string, unknown>;
  if (typeof b.ev !== 'string' || typeof b.cn !== 'string' || !Number.isSafeInteger(b.auditSeq)) throw new Error('unlock item needs ev, cn and auditSeq');
  unlockDb(store).putSync([boxId, b.auditSeq as number], { ...b, boxId, auditSeq: b.auditSeq as number, ev: b.ev, cn: b.cn, at: item.at });
}

export function unlockKmsVerbs(store: KmsStore): VerbTable {
  return {
    'unlock-tokens': {
      request: {
        type: 'object',
        additionalProperties: false,
        properties: {
          boxId: NAME,
          user: NAME,
          ecu: { type: 'string', pattern: '^[0-9a-fA-F]{2,64}$' },
          ecuType: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$' },
          ev: { type: 'string', pattern: '^[a-z]{2,16}$', default: 'grant' },
          since: { type: 'string', format: 'date-time' },
          limit: { type: 'integer', minimum: 1, maximum: 100_000, default: 10_000 },
        },
      },
      handler: (q: { boxId?: string; user?: string; ecu?: string; ecuType?: string; ev: string; since?: string; limit: number }) => {
        const items: FleetUnlockRecord[] = [];
        const range = q.boxId ? { start: [q.boxId, 0] as [string, number], end: [q.boxId, Number.MAX_SAFE_INTEGER] as [string, number] } : {};
        for (const { value: r } of unlockDb(store).getRange(range)) {
          if (r.ev !== q.ev && q.ev !== 'all') continue;
          if ((q.user && r.cn !== q.user) || (q.ecu && r.uid !== q.ecu.toLowerCase()) || (q.ecuType && r.ecuType !== q.ecuType) || (q.since && r.at < new Date(q.since).toISOString())) continue;
          items.push(r);
          if (items.length >= q.limit) break;
        }
        return { items };
      },
    },
  };
}
