// Issue 16 §2: the KMS's side of a cluster of boxes in one plant.
//  - plants: a box names its plant at registration (else `box-<plant>-<n>` gives it); stock
//    moves, and proofs are relayed, only between boxes of one plant.
//  - one ECU slot, one injected key: `slots` holds the key recorded as injected per (pool, UID).
//    A second proven injection for the same slot is decided by the ECU's proof: SHE takes an
//    update only with a strictly higher counter, and M4 authenticates that counter, so the
//    proof with the higher counter names the key the ECU holds; the other key is recorded as
//    burned (`superseded`). Two proofs with the same counter cannot both come from a genuine
//    SHE: the second is rejected (PKS_CONFLICT), and the box raises a critical alert.
//  - relayed proofs: a tester whose box A died after the ECU gave its proof for A's key hands
//    the proof to box B of the same plant, which forwards it (`relayed-proof`, in B's signed
//    verification file). The KMS checks it against the key it sent to A, as it checks A's own;
//    A's later burn of that key (its sweep never saw the proof) changes nothing.
//  - release (rebalancing): box A, on a signed ops command, takes keys out of its stock for
//    good (durable, audited, in its outbox); only once the KMS holds A's signed release record
//    does it allocate the same number of fresh keys to box B. A released key is never sent
//    anywhere again, so no key is ever live on two boxes.
import { asPksError } from '../../appliance/errors.js';
import type { OutboxItem } from '../../appliance/contracts/keystore.js';
import { pushCapped, type BoxRecord, type InjectionRecord, type KmsStore } from './store.js';

export class Reject extends Error {
  constructor(
    readonly code: string,
    readonly detail: string,
  ) {
    super(detail);
  }
}
export const reject = (code: string, detail: string): never => {
  throw new Reject(code, detail);
};
export const asReject = (e: unknown): Reject => (e instanceof Reject ? e : new Reject(asPksError(e).code, asPksError(e).detail));

/** The plant of a box: as registered, else from its id (box-<plant>-<n>), else its own id. */
export function plantOf(b: Pick<BoxRecord, 'boxId' | 'plant'>): string {
  return b.plant ?? /^box-(.+)-[0-9]+$/.exec(b.boxId)?.[1] ?? b.boxId;
}

/** The box record to change: `b` itself when it is the one (it is written at the end of the file). */
function boxFor(store: KmsStore, b: BoxRecord, boxId: string): { rec: BoxRecord; save: () => void } | null {
  if (boxId === b.boxId) return { rec: b, save: () => undefined };
  const rec = store.boxes.get(boxId);
  return rec ? { rec, save: () => void store.boxes.putSync(boxId, rec) } : null;
}

/**
 * Records `rec` (VERIFIED, already counted so by the caller) as the key in its ECU slot, by the
 * rule above. Returns false when the slot holds a key with a higher counter: `rec` is then
 * turned into a superseded burn (the caller stores it) and the counters follow.
 */
export function claimSlot(store: KmsStore, b: BoxRecord, rec: InjectionRecord, now: Date): boolean {
  const key: [string, string] = [rec.pool, rec.uid!];
  const holder = store.slots.get(key);
  if (holder && holder !== rec.recordId) {
    const other = store.injections.get(holder);
    if (other?.state === 'VERIFIED') {
      const oc = other.counter ?? -1;
      const nc = rec.counter ?? -1;
      if (nc === oc) reject('PKS_CONFLICT', `ECU ${rec.uid} slot of ${rec.pool} already holds key ${holder} with the same counter ${oc}`);
      const [winner, loser] = nc > oc ? [rec, other] : [other, rec];
      loser.state = 'BURNED';
      loser.reason = `superseded by ${winner.recordId} (counter ${winner.counter ?? '?'} above ${loser.counter ?? '?'})`;
      const lb = boxFor(store, b, loser.boxId);
      if (lb) {
        // the caller counted `rec` as verified already
        lb.rec.counters.verified--;
        lb.rec.counters.burned++;
        pushCapped(lb.rec.events, { type: 'slot-superseded', recordId: loser.recordId, by: winner.recordId, pool: rec.pool, uid: rec.uid, at: now.toISOString(), source: 'kms' });
        lb.save();
      }
      if (loser === other) store.injections.putSync(other.recordId, other);
      if (winner === other) return false;
    }
  }
  store.slots.putSync(key, rec.recordId);
  return true;
}

export interface Release {
  to: string;
  pool: string;
  ref: string;
  count: number;
}

/** One released key of box `b` (rebalancing): recorded, never sent again; counted for `to`. */
export function takeRelease(store: KmsStore, b: BoxRecord, item: OutboxItem, owned: { batchId: string; pool: string; recordId: string }, releases: Release[]): void {
  const { to, ref } = item.body as { to?: unknown; ref?: unknown };
  if (typeof to !== 'string' || typeof ref !== 'string' || !/^[A-Za-z0-9._-]{1,96}$/.test(ref)) reject('PKS_BAD_REQUEST', 'release needs to and ref');
  const target = store.boxes.get(to as string);
  // the key is out of A's stock either way; it only goes nowhere when the target is wrong
  if (!target || target.decommissioned || plantOf(target) !== plantOf(b) || to === b.boxId) reject('PKS_BAD_REQUEST', `release target ${String(to)} is not another live box of plant ${plantOf(b)}`);
  const prior = store.injections.get(owned.recordId);
  if (prior) {
    if (prior.state === 'RELEASED' && prior.boxId === b.boxId) return;
    reject('PKS_CONFLICT', `key ${owned.recordId} was already reported (${prior.state})`);
  }
  store.injections.putSync(owned.recordId, { recordId: owned.recordId, boxId: b.boxId, batchId: owned.batchId, pool: owned.pool, state: 'RELEASED', at: item.at, fileId: '', itemId: item.id, reason: `released to ${to as string} (${ref as string})` });
  const r = releases.find((x) => x.to === to && x.pool === owned.pool && x.ref === ref);
  if (r) r.count++;
  else releases.push({ to: to as string, pool: owned.pool, ref: ref as string, count: 1 });
}

/** The request id under which the KMS answers a release with fresh stock for the target. */
export const rebalanceRequestId = (from: string, fileId: string, r: Release): string => `rb-${from}-${fileId}-${r.pool}-${r.ref}`.slice(0, 128);
