// A tester's grant, checked at the keystore's own door for every reserve and confirm: the
// registry record must exist, not be revoked, not have lapsed, and (for a reservation) name the
// pool. The tester API used to ask `tester-get` before each of those calls; folding the check in
// here saves two process crossings per injection (issue 11) and means the keystore no longer
// takes its caller's word for a grant. A revocation holds from the next request on, as before.
import { pksError } from '../../appliance/errors.js';
import type { TesterRecord } from '../../appliance/contracts/keystore.js';
import type { Dbs } from './db.js';
import { refuse, type Refusal } from './stock.js';

export function checkGrant(dbs: Dbs, cn: string, now: number, pool?: string): TesterRecord {
  return grantHolds(dbs.testers.get(cn), cn, now, pool);
}

/** The same check on a record read elsewhere (the bench's PostgreSQL keystore reads its own). */
export function grantHolds(t: TesterRecord | undefined, cn: string, now: number, pool?: string): TesterRecord {
  const r = grantRefusal(t, cn, now, pool);
  if (r) throw pksError(r.refused, r.detail);
  return t!;
}

/** The check itself, as a refusal, for callers inside a write transaction (handover.ts), which must not throw. */
export function grantRefusal(t: TesterRecord | undefined, cn: string, now: number, pool?: string): Refusal | null {
  if (!t) return refuse('PKS_TESTER_UNKNOWN', `tester '${cn}' is not registered`);
  if (t.revoked || t.cn !== cn) return refuse('PKS_TESTER_UNKNOWN', `tester '${cn}' is revoked`);
  if (!(Date.parse(t.expiresAt) > now)) return refuse('PKS_TESTER_EXPIRED', `the authorization of tester '${cn}' has expired`);
  if (pool !== undefined && !t.pools.includes(pool)) return refuse('PKS_POOL_FORBIDDEN', `tester '${cn}' may not use pool '${pool}'`);
  return null;
}
