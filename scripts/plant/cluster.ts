// Issue 16 §2: a plant with a cluster of boxes on one machine, for test/cluster/ and the demo's
// short cluster phase. Each member box is a full appliance (vault, keystore, uplink, tester API)
// registered with the same KMS in the same plant; their tester APIs share one box CA and one
// tester CA, so a station's certificate works on each. A shift runs stations through the
// tester library's cluster client (appliance/inject/cluster.ts) while members are SIGKILLed:
// the keystore of one (its tester API then answers coded 503s), later the tester API of the
// other (connection failures). Afterwards every key that left a box's stock must be on record
// at the KMS exactly once, every ECU slot hold one injected key there, and each box's audit verify.
import { createPublicKey, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';
import { asPksError } from '../../appliance/errors.js';
import { clusterClient, type ClusterApi } from '../../appliance/inject/cluster.js';
import { verifyAudit } from '../../services/keystore/audit.js';
import { openDbs } from '../../services/keystore/db.js';
import { startBox, type Box } from './box.js';
import type { TestBroker } from './broker.js';
import { writeUplinkConfig } from './enrol.js';
import { SheEcu } from './ecu-sim.js';
import type { TestKms } from './kms.js';
import type { LinePool } from './line.js';
import { startService, waitFor, type Proc } from './process.js';
import { startTesterApi, type TesterApiHandle } from './tester-api.js';
import { ensureServiceUsers, pairGroups, prepareServiceUser, separateUsers } from './users.js';

export interface ClusterMember {
  boxId: string;
  box: Box;
  api: TesterApiHandle;
  uplink: Proc;
  upDir: string;
  /** stops what this module started for the member (nothing for an adopted box) */
  stop(): Promise<void>;
}

export const UPLINK_TIMING = { tickSeconds: 0.3, chunkTimeoutSeconds: 2, reorderRetrySeconds: 5, ackTimeoutSeconds: 2, statusSeconds: 1 };

/** A new box of the plant: appliance processes, registered with the KMS, stock ordered over MQTT. */
export async function startMember(o: {
  base: string;
  boxId: string;
  plant: string;
  broker: TestBroker;
  kms: TestKms;
  pools: { pool: string; minimum: number; reorder: number }[];
  testers: { cn: string; station: string; pools: string[] }[];
  /** the tester PKI to share (another member's tester-api/pki) */
  pkiDir?: string;
}): Promise<ClusterMember> {
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
  };
  try {
    // a short TTL and sweep: keys a dead member reserved are burned and reported within seconds
    const box = await startBox({ base: path.join(o.base, o.boxId), boxId: o.boxId, pools: o.pools, checkpointEvery: 50, kmsCa: o.kms.caCert, keystoreExtra: { reservationTtlHours: 0.002, sweepSeconds: 1 } });
    stops.push(() => box.stop());
    const vu = box.vault.client('uplink');
    const pk = async (name: string): Promise<string> => (await vu.call<{ spki: string }>('public-key', { name })).spki;
    await o.kms.fleet.call('register', { boxId: o.boxId, plant: o.plant, identity: await pk('identity'), transport: await pk('transport'), audit: await pk('audit') });
    const separate = separateUsers() && ensureServiceUsers();
    const upDir = path.join(o.base, o.boxId, 'uplink');
    const upCfg = await writeUplinkConfig({ dir: upDir, boxId: o.boxId, broker: o.broker, kmsCaFile: o.kms.caCert, timing: UPLINK_TIMING, ...(separate ? { ipcGroups: pairGroups('uplink', ['sentinel', 'updater']) } : {}) });
    const upUser = prepareServiceUser('uplink', { separate, own: [upDir], runDir: box.runDir, reach: [path.dirname(o.kms.caCert)] });
    const uplink = startService('uplink', { PKS_CONFIG: upCfg, PKS_RUN_DIR: box.runDir }, box.logDir, 'uplink', upUser);
    stops.push(() => uplink.stop());
    const api = await startTesterApi({ dir: path.join(o.base, o.boxId, 'tester-api'), runDir: box.runDir, logDir: box.logDir, testers: o.testers, keystoreAdmin: box.keystore.client('pksctl'), ...(o.pkiDir ? { pkiDir: o.pkiDir } : {}) });
    stops.push(() => api.stop());
    return { boxId: o.boxId, box, api, uplink, upDir, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

export const stats = async (m: ClusterMember): Promise<StatsResponse['pools']> => (await m.box.keystore.client('pksctl').call<StatsResponse>('stats')).pools;

export interface ShiftResult {
  ecus: number;
  injected: number;
  /** ECUs whose proof went to the KMS through another box (the issuing one was down) */
  relayed: number;
  failovers: number;
  /** why each fail-over happened: 'connection' (the box did not answer) or the 503 code it answered */
  failoverWhy: Record<string, number>;
  /** a package answered for two ECUs (never) */
  duplicates: number;
  errors: number;
}

/**
 * Stations inject `ecus` simulated SHE ECUs through cluster clients (half of them start on each
 * member); `events` run when the shift reaches the given count of finished ECUs, and no station
 * starts another ECU until the event is done (so a kill lands mid-shift, not after it).
 */
export async function runShift(o: { members: ClusterMember[]; pools: LinePool[]; ecus: number; stations: number; events?: { at: number; run: () => Promise<void> }[] }): Promise<ShiftResult> {
  const testers = o.members[0]!.api.testers;
  const issued = new Map<string, string>();
  const r: ShiftResult = { ecus: o.ecus, injected: 0, relayed: 0, failovers: 0, failoverWhy: {}, duplicates: 0, errors: 0 };
  const why = (w: string): void => {
    const k = /^PKS_SERVICE_UNAVAILABLE: box https:/.test(w) ? 'connection' : w.split(':')[0]!;
    r.failoverWhy[k] = (r.failoverWhy[k] ?? 0) + 1;
  };
  let next = 0;
  let done = 0;
  const events = [...(o.events ?? [])].sort((a, b) => a.at - b.at);
  let eventRun: Promise<void> = Promise.resolve();
  const finished = (): void => {
    done++;
    while (events.length && done >= events[0]!.at) {
      const ev = events.shift()!;
      eventRun = eventRun.then(ev.run);
    }
  };
  const gate = (): Promise<void> => eventRun;
  const clients: ClusterApi[] = [];
  const station = async (i: number): Promise<void> => {
    const t = testers[i % testers.length]!;
    const order = o.members.map((_, k) => o.members[(i + k) % o.members.length]!);
    const cc = clusterClient(
      order.map((m) => ({ boxId: m.boxId, url: m.api.url, ca: m.api.boxCa, cert: t.cert, key: t.key, timeoutMs: 5000 })),
      { onFailover: (_from, _to, w) => why(w) },
    );
    clients.push(cc);
    while (next < o.ecus) {
      await gate();
      if (next >= o.ecus) break;
      const n = next++;
      const p = o.pools[n % o.pools.length]!;
      const uid = randomBytes(15);
      uid[0] = 0x20;
      const ecu = new SheEcu(uid, p.masterKey);
      for (let attempt = 0; ; attempt++) {
        if (attempt >= 200) throw new Error(`ECU ${uid.toString('hex')} not injected after ${attempt} attempts`);
        let pkgId: string | undefined;
        try {
          const pkg = await cc.reserve(p.pool, uid.toString('hex'));
          pkgId = pkg.packageId;
          const prior = issued.get(pkg.packageId);
          if (prior && prior !== uid.toString('hex')) r.duplicates++;
          issued.set(pkg.packageId, uid.toString('hex'));
          const proof = ecu.loadKey(Buffer.from(pkg.m1, 'hex'), Buffer.from(pkg.m2, 'hex'), Buffer.from(pkg.m3, 'hex'));
          const c = await cc.confirm(pkg.packageId, proof.m4, proof.m5);
          if (c.state === 'RELAYED') r.relayed++;
          else if (c.state !== 'INJECTED' && c.state !== 'REPORTED') throw new Error(`state ${c.state}`);
          r.injected++;
          finished();
          break;
        } catch (err) {
          r.errors++;
          const e = asPksError(err);
          // both boxes down for a moment, or a retry the box answers with a conflict: ask again
          if (pkgId && e.code !== 'PKS_SERVICE_UNAVAILABLE') await cc.fail(pkgId, e.code).catch(() => undefined);
          await new Promise((res) => setTimeout(res, 100));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: o.stations }, (_, i) => station(i)));
  await eventRun;
  r.failovers = clients.reduce((a, c) => a + c.failovers, 0);
  await Promise.all(clients.map((c) => c.close()));
  return r;
}

export interface ClusterCheck {
  /** keys that left a box's stock (reserved, injected, reported, burned) */
  out: number;
  /** of those, how many the KMS has on record from that box */
  onRecord: number;
  /** ECU slots with more than one key standing as injected at the KMS */
  doubleSlots: number;
  kmsVerified: number;
  reserved: number;
  auditOk: boolean[];
}

/** Waits until every member's outbox is at the KMS, then compares the boxes with the KMS's record. */
export async function checkCluster(kms: TestKms, members: ClusterMember[], expectVerified: number): Promise<ClusterCheck> {
  type Item = { boxId: string; state: string; uid: string | null; pool: string; recordId: string };
  const report = async (): Promise<Item[]> => (await kms.fleet.call<{ items: Item[] }>('report', { limit: 1_000_000 })).items;
  let last: ClusterCheck | undefined;
  await waitFor(
    'every key of every member on record at the KMS',
    async () => {
      for (const m of members) await m.box.keystore.client('uplink').call('checkpoint', {}).catch(() => undefined);
      const items = await report();
      let out = 0;
      let onRecord = 0;
      let reserved = 0;
      for (const m of members) {
        for (const s of Object.values(await stats(m))) {
          out += s.reserved + s.injected + s.reported + s.burned;
          reserved += s.reserved;
        }
        onRecord += items.filter((i) => i.boxId === m.boxId && i.state !== 'REJECTED').length;
      }
      const slots = new Map<string, number>();
      for (const i of items) if (i.state === 'VERIFIED') slots.set(`${i.pool}|${i.uid}`, (slots.get(`${i.pool}|${i.uid}`) ?? 0) + 1);
      const kmsVerified = items.filter((i) => i.state === 'VERIFIED').length;
      last = { out, onRecord, doubleSlots: [...slots.values()].filter((n) => n > 1).length, kmsVerified, reserved, auditOk: [] };
      return reserved === 0 && out === onRecord && kmsVerified >= expectVerified;
    },
    90_000,
    500,
  ).catch(() => undefined);
  const c = last!;
  for (const m of members) {
    const spki = Buffer.from((await m.box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
    const dbs = openDbs(m.box.keystore.dataDir, { readOnly: true });
    try {
      c.auditOk.push(verifyAudit(dbs, createPublicKey({ key: spki, format: 'der', type: 'spki' })).ok);
    } finally {
      await dbs.root.close();
    }
  }
  return c;
}
