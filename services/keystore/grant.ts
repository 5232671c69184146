// A tester's grant, checked at the keystore's own door for every reserve and confirm: the
// registry record must exist, not be revoked, not have lapsed, and (for a reservation) name the
// pool. The tester API used to ask `tester-get` before each of those calls; folding the check in
// here saves two process crossings per injection (issue 11) and means the keystore no longer
// takes its caller's word for a grant. A revocation holds from the next request on, as before.
import { pksError } from '../../appliance/errors.js';
import type { TesterRecord } from '../../appliance/contracts/keystore.js';
import type { Dbs } from './db.js';

export function checkGrant(dbs: Dbs, cn: string, now: number, pool?: string): TesterRecord {
  return grantHolds(dbs.testers.get(cn), cn, now, pool);
}

/** The same check on a record read elsewhere (the bench's PostgreSQL keystore reads its own). */
export function grantHolds(t: TesterRecord | undefined, cn: string, now: number, pool?: string): TesterRecord {
  if (!t) throw pksError('PKS_TESTER_UNKNOWN', 'tester is not registered');
  if (t.revoked || t.cn !== cn) throw pksError('PKS_TESTER_UNKNOWN', 'tester is revoked');
  if (!(Date.parse(t.expiresAt) > now)) throw pksError('PKS_TESTER_EXPIRED', 'tester authorization has expired');
  if (pool !== undefined && !t.pools.includes(pool)) throw pksError('PKS_POOL_FORBIDDEN', `tester may not use pool '${pool}'`);
  return t;
}
