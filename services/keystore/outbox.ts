// The outbox lets out only what is on disk (issue 9, item 4):
//  - ids: `<epoch 6 digits><seq 10 digits>`. The epoch is bumped and flushed at every start
//    before any id is given out, so a power cut that rolls back the sequence can never make
//    one id name two different items (the old ones may be at the KMS already);
//  - peek and files hold only items whose commit is flushed: read first, then await flushed;
//  - an item the KMS rejects is never deleted: it moves to `rejected` with the KMS's reason,
//    stays queryable (`outbox-rejected`), and a critical alert is recorded in the same
//    transaction, which the sentinel mails.
import { randomUUID } from 'node:crypto';
import { appendAudit } from './audit.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';
import type { Dbs } from './db.js';

const EPOCH = 'outbox-epoch';
const SEQ = 'outbox-seq';

export interface Rejection {
  id: string;
  code: string;
  detail: string;
}

export interface RejectedItem extends OutboxItem {
  code: string;
  detail: string;
  rejectedAt: string;
}

/** Called once at start, before serving: a new epoch, on disk before any id of it exists. */
export async function beginOutboxEpoch(dbs: Dbs): Promise<number> {
  const epoch = await dbs.root.transaction(() => {
    const e = ((dbs.meta.get(EPOCH) as number | undefined) ?? 0) + 1;
    if (e > 999_999) throw new Error('outbox epoch exhausted');
    dbs.meta.putSync(EPOCH, e);
    return e;
  });
  await dbs.root.flushed;
  return epoch;
}

/** Inside a write transaction: the next id. Sortable: epoch first, then the sequence. */
export function nextOutboxId(dbs: Dbs): string {
  const epoch = (dbs.meta.get(EPOCH) as number | undefined) ?? 0;
  const seq = ((dbs.meta.get(SEQ) as number | undefined) ?? 0) + 1;
  dbs.meta.putSync(SEQ, seq);
  return String(epoch).padStart(6, '0') + String(seq % 10_000_000_000).padStart(10, '0');
}

/** Oldest first, only what is flushed: the read happens before the flush it waits for. */
export async function peekFlushed(dbs: Dbs, limit: number, after?: string): Promise<OutboxItem[]> {
  const items: OutboxItem[] = [];
  const start = after ? after + '\0' : '';
  for (const { key, value } of dbs.outbox.getRange({ start, limit })) items.push({ id: key, kind: value.kind as OutboxItem['kind'], at: value.at, body: value.body });
  await dbs.root.flushed;
  return items;
}

/** A fresh verification-file id (the vault checks this form). */
export const newFileId = (): string => `vf-${randomUUID()}`;

/**
 * Inside a write transaction: the KMS refused these items. They leave the outbox (so they are
 * not sent for ever) into `rejected`, never into nothing; one audit entry and one critical
 * alert each. Injections stay INJECTED (not REPORTED): the KMS has no good record of them.
 */
export function rejectTx(dbs: Dbs, now: number, list: readonly Rejection[], putAlert: (body: Record<string, unknown>) => void): { rejected: number } {
  let rejected = 0;
  const at = new Date(now).toISOString();
  for (const r of list) {
    const item = dbs.outbox.get(r.id);
    if (!item) continue;
    const detail = r.detail.slice(0, 300);
    dbs.rejected.putSync(r.id, { id: r.id, kind: item.kind as OutboxItem['kind'], at: item.at, body: item.body, code: r.code, detail, rejectedAt: at });
    dbs.outbox.removeSync(r.id);
    appendAudit(dbs, now, { ev: 'outbox-rejected', id: r.id, kind: item.kind, code: r.code, detail });
    putAlert({ kind: 'kms-rejected', severity: 'critical', id: r.id, itemKind: item.kind, code: r.code, detail, ...(typeof item.body.uid === 'string' ? { uid: item.body.uid } : {}) });
    rejected++;
  }
  return { rejected };
}

export function listRejected(dbs: Dbs, limit: number): RejectedItem[] {
  return [...dbs.rejected.getRange({ limit })].map((e) => e.value);
}
