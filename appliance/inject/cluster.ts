// Issue 16 §2: the tester library over the boxes of one plant (a cluster). One BoxApi that
// holds a client per box and keeps to the box it is on until that box fails:
//  - a reservation goes to the current box; a connection failure or a 503 (any code the
//    catalogue answers with 503: down, draining, pool empty, HSM missing) moves on to the next
//    box and asks there. Whatever the dead box may have reserved is never confirmed there: its
//    sweep burns it and reports it to the KMS (a key that left the box is never reissued).
//  - confirm and fail go to the box that issued the package, never elsewhere. When that box is
//    gone after the ECU gave its proof, the ECU holds that box's key: no other key is asked for
//    that ECU slot. The proof is relayed through the next box to the KMS, which checks it against
//    the key it sent and records the injection for the box that issued it (scripts/kms/cluster.ts);
//    that box's later burn of the same key changes nothing, and two keys can never both stand
//    as injected in one ECU slot there (the higher SHE counter is what the ECU holds).
import { asPksError, pksError, type PksError } from '../errors.js';
import { boxClient, type BoxApi, type BoxOptions, type SheP } from './box.js';

export interface ClusterBox extends BoxOptions {
  /** the box id (its KMS name): the origin a relayed proof names */
  boxId: string;
}

export interface ClusterApi extends BoxApi {
  /** the box id reservations go to now */
  current(): string;
  /** how often the client moved on to another box */
  readonly failovers: number;
  /** proofs handed to another box because the issuing box was gone */
  readonly relayed: number;
}

/** Connection failures and coded 503s move the tester on; anything else is the box's answer. */
export const isFailover = (e: PksError): boolean => e.status === 503;

export function clusterClient(boxes: readonly ClusterBox[], o: { make?: (b: ClusterBox) => BoxApi; onFailover?: (from: string, to: string, why: string) => void } = {}): ClusterApi {
  if (boxes.length === 0) throw pksError('PKS_BAD_REQUEST', 'a cluster needs at least one box');
  const clients = boxes.map((b) => (o.make ?? boxClient)(b));
  const issued = new Map<string, { box: number; pkg: SheP }>();
  let cur = 0;
  let failovers = 0;
  let relayed = 0;
  const moveOn = (from: number, e: PksError): void => {
    if (cur !== from) return; // another station on this client moved already
    cur = (from + 1) % boxes.length;
    failovers++;
    o.onFailover?.(boxes[from]!.boxId, boxes[cur]!.boxId, `${e.code}: ${e.detail}`);
  };
  const api: ClusterApi = {
    current: () => boxes[cur]!.boxId,
    get failovers() {
      return failovers;
    },
    get relayed() {
      return relayed;
    },
    async reserve(pool, uid) {
      let last: PksError | undefined;
      for (let tried = 0; tried < boxes.length; tried++) {
        const at = cur;
        try {
          const pkg = await clients[at]!.reserve(pool, uid);
          issued.set(pkg.packageId, { box: at, pkg });
          return pkg;
        } catch (err) {
          last = asPksError(err);
          if (!isFailover(last)) throw last;
          moveOn(at, last);
        }
      }
      throw last!;
    },
    async confirm(packageId, m4, m5) {
      const own = issued.get(packageId);
      if (!own) throw pksError('PKS_NOT_FOUND', 'no such package from this cluster client');
      try {
        const r = await clients[own.box]!.confirm(packageId, m4, m5);
        issued.delete(packageId);
        return r;
      } catch (err) {
        const e = asPksError(err);
        if (!isFailover(e)) throw e;
        moveOn(own.box, e);
        // the issuing box is gone, the ECU holds its key: the proof goes to the KMS another way
        const relay = { origin: boxes[own.box]!.boxId, packageId, pool: own.pkg.pool, uid: own.pkg.uid, counter: own.pkg.counter ?? 0, m4: m4.toString('hex'), m5: m5.toString('hex') };
        let last: PksError = e;
        for (let k = 1; k < boxes.length; k++) {
          const j = (own.box + k) % boxes.length;
          try {
            await clients[j]!.relay!(relay);
            relayed++;
            issued.delete(packageId);
            return { state: 'RELAYED', verified: false };
          } catch (err2) {
            last = asPksError(err2);
          }
        }
        throw last;
      }
    },
    async fail(packageId, reason) {
      const own = issued.get(packageId);
      if (!own) throw pksError('PKS_NOT_FOUND', 'no such package from this cluster client');
      // only the issuing box can burn its key; if it is gone, its sweep does
      const r = await clients[own.box]!.fail(packageId, reason);
      issued.delete(packageId);
      return r;
    },
    async close() {
      await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
    },
  };
  return api;
}
