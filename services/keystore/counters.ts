// The SHE counter (C_ID) of every package, chosen by the keystore and kept per (ECU UID, slot).
// A SHE accepts an update only if its counter is strictly greater than the one the slot holds,
// so a reworked ECU (it loaded a key, the proof was lost, the key was burned) needs a package
// with a counter above every counter this box ever prepared for that ECU slot:
//   counter = max(batch base counter, highest counter used for (UID, slot) + 1)
// The first package for an ECU gets the batch's base counter; each further package for the same
// ECU slot gets one more. The counter is stored on the key record (the vault computes M2 with
// it, a retry gets the same package), in this table (durable, never compacted), and in the
// injection and burn records the KMS verifies. SHE counters have 28 bits: a slot whose next
// counter would pass 0x0FFFFFFF can no longer be updated by the memory update protocol, so the
// reservation is refused with PKS_SHE_COUNTER_EXHAUSTED, nothing is reserved, and the ECU needs
// a key with fresh slot state (a new batch cannot help: its counter would also be too low).
import { SHE_COUNTER_MAX } from '../../appliance/she.js';
import type { Dbs } from './db.js';
import { refuse, type Refusal } from './stock.js';

const key = (uid: string, keyId: number): string => `${uid}|${keyId}`;

export function lastCounter(dbs: Dbs, uid: string, keyId: number): number | undefined {
  return dbs.sheCounters.get(key(uid, keyId));
}

/** The counter the next package for this ECU slot must carry; a refusal at the 28-bit limit. */
export function nextCounter(dbs: Dbs, uid: string, keyId: number, base: number): number | Refusal {
  const last = lastCounter(dbs, uid, keyId);
  const next = last === undefined ? base : Math.max(base, last + 1);
  if (next > SHE_COUNTER_MAX) return refuse('PKS_SHE_COUNTER_EXHAUSTED', `ECU ${uid} slot ${keyId}: SHE counter ${last} is at the 28-bit limit`);
  return next;
}

/** Records the counter a package was prepared with; call in the reservation's transaction. */
export function useCounter(dbs: Dbs, uid: string, keyId: number, counter: number): void {
  const last = lastCounter(dbs, uid, keyId);
  if (last === undefined || counter > last) dbs.sheCounters.putSync(key(uid, keyId), counter);
}
