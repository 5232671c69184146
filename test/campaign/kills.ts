// The kill campaign (issue 17.1): testers inject simulated SHE ECUs over mTLS while one killer
// per service SIGKILLs the vault, the keystore, the tester API and the uplink at random moments
// and restarts it as systemd would. When the kills stop, the uplink drains to the KMS; then
// what must hold is checked from the stores themselves, not from what the services say:
//   - no key in two ECUs (tester view, keystore LMDB, KMS records), no ECU with two keys;
//   - every injection a tester saw confirmed is INJECTED/REPORTED for that ECU in the keystore;
//   - the audit chain verifies with the HSM audit key;
//   - the KMS holds a VERIFIED record for every injected key, for the same ECU.
import { createPublicKey, randomBytes } from 'node:crypto';
import path from 'node:path';
import type { ReserveResponse } from '../../appliance/contracts/keystore.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { call } from '../../scripts/plant/line.js';
import { waitFor } from '../../scripts/plant/process.js';
import { KmsStore } from '../../scripts/kms/store.js';
import { verifyAudit } from '../../services/keystore/audit.js';
import { openDbs } from '../../services/keystore/db.js';
import { KILL_TARGETS, startCampaignStack, type KillTarget } from './stack.js';

export interface KillOptions {
  base: string;
  /** stop killing after this long ... */
  seconds: number;
  /** ... or after this many kills, whichever comes first */
  maxKills?: number;
  testers?: number;
  /** pause between a service's restart and its next kill, ms (uniform in [min, max]) */
  gapMs?: [number, number];
  say?: (s: string) => void;
}

export interface KillResult {
  kills: number;
  killsBy: Record<KillTarget, number>;
  seconds: number;
  ecus: number;
  confirmed: number;
  injected: number;
  retries: number;
  stuck: number;
  duplicates: number;
  lost: number;
  audit_ok: boolean;
  audit_entries: number;
  kms_verified: number;
  kms_missing: number;
  problems: string[];
}

type Pkg = ReserveResponse & { code?: string };

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runKillCampaign(o: KillOptions): Promise<KillResult> {
  const say = o.say ?? (() => {});
  const testers = o.testers ?? 4;
  const [gapMin, gapMax] = o.gapMs ?? [300, 1500];
  const t0 = Date.now();
  const stack = await startCampaignStack({ base: o.base, testers, minimum: 300, reorder: 600 });
  const problems: string[] = [];
  const killsBy = Object.fromEntries(KILL_TARGETS.map((t) => [t, 0])) as Record<KillTarget, number>;
  const pkgToUid = new Map<string, string>();
  const confirmed = new Map<string, string>(); // packageId -> uid
  let kills = 0;
  let ecus = 0;
  let retries = 0;
  let stuck = 0;
  let duplicates = 0;
  let killing = true;
  try {
    say(`kill campaign: stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s, stock from the KMS over MQTT`);
    const k0 = Date.now();
    const worker = async (w: number): Promise<void> => {
      const c = stack.api.client(stack.api.testers[w]!);
      let n = 0;
      while (killing) {
        const p = stack.pools[(w + n++) % stack.pools.length]!;
        const uid = randomBytes(15);
        uid[0] = 0x30; // never the wildcard UID
        const hex = uid.toString('hex');
        ecus++;
        const ecu = new SheEcu(uid, p.masterKey);
        let proof: { m4: Buffer; m5: Buffer } | undefined;
        const until = Date.now() + 180_000;
        let done = false;
        while (!done && Date.now() < until) {
          try {
            const r = await call<Pkg>(c, 'POST', '/v1/she/packages', { pool: p.pool, uid: hex });
            // confirmed before a kill, the answer was lost: the retry is told, with the package id
            const already = r.body as { code?: string; packageId?: string };
            if (r.status === 409 && already.code === 'PKS_ALREADY_INJECTED' && pkgToUid.get(already.packageId!) === hex) {
              confirmed.set(already.packageId!, hex);
              done = true;
              continue;
            }
            if (r.status !== 200) throw new Error(`reserve ${r.status} ${already.code ?? ''}`);
            const prior = pkgToUid.get(r.body.packageId);
            if (prior && prior !== hex) {
              duplicates++;
              problems.push(`package ${r.body.packageId} went to ECUs ${prior} and ${hex}`);
            }
            pkgToUid.set(r.body.packageId, hex);
            // an ECU that took this key already (its confirmation lost in a kill) answers with the same proof
            proof ??= ecu.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
            const k = await call<{ state: string; verified: boolean }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/confirm`, { m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
            if (k.status !== 200) throw new Error(`confirm ${k.status}`);
            if (!k.body.verified) problems.push(`package ${r.body.packageId}: confirm answered 200 but not verified`);
            confirmed.set(r.body.packageId, hex);
            done = true;
          } catch {
            retries++;
            await sleep(40);
          }
        }
        if (!done) {
          stuck++;
          problems.push(`ECU ${hex} got no confirmed injection within 180 s`);
        }
      }
    };
    const killer = async (t: KillTarget): Promise<void> => {
      await sleep(Math.random() * gapMax);
      while (killing) {
        await sleep(gapMin + Math.random() * (gapMax - gapMin));
        if (!killing) break;
        await stack.proc(t).kill9();
        kills++;
        killsBy[t]++;
        if (o.maxKills !== undefined && kills >= o.maxKills) killing = false;
        // as systemd: Restart=on-failure, here without RestartSec so that kills add up
        for (let attempt = 0; ; attempt++) {
          try {
            await stack.restart(t);
            break;
          } catch (e) {
            if (attempt >= 5) throw e;
            await sleep(500);
          }
        }
      }
    };
    const progress = setInterval(() => say(`  ${((Date.now() - k0) / 1000).toFixed(0)} s: ${kills} kills (${KILL_TARGETS.map((t) => `${t} ${killsBy[t]}`).join(', ')}), ${confirmed.size} injections confirmed, ${retries} retried calls`), 30_000);
    const stopAt = setTimeout(() => (killing = false), o.seconds * 1000);
    try {
      await Promise.all([...Array.from({ length: testers }, (_, w) => worker(w)), ...KILL_TARGETS.map((t) => killer(t))]);
    } finally {
      clearInterval(progress);
      clearTimeout(stopAt);
    }
    const killSeconds = (Date.now() - k0) / 1000;
    say(`kills stopped after ${killSeconds.toFixed(0)} s: ${kills} kills, ${confirmed.size} injections confirmed; draining the uplink to the KMS`);

    // drain: a checkpoint covers the tail of the audit, the uplink delivers every outbox item
    const ks = stack.box.keystore.client('uplink');
    await ks.call('checkpoint', {});
    let kmsVerified = 0;
    await waitFor(
      'the KMS verified every confirmed injection',
      async () => {
        const b = await stack.kms.fleet.call<{ counters: { verified: number } }>('box', { boxId: stack.boxId });
        kmsVerified = b.counters.verified;
        return kmsVerified >= confirmed.size;
      },
      300_000,
      500,
    ).catch((e: Error) => problems.push(e.message));
    // then a little more so that the acks of the last files come back and the outbox is empty
    await waitFor('outbox drained', async () => ((await ks.call<{ items: unknown[] }>('outbox-peek', { limit: 1 }).catch(() => ({ items: [1] }))).items.length === 0), 60_000, 500).catch(() => {});

    const auditSpki = Buffer.from((await stack.box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
    await stack.api.stop();
    await stack.proc('uplink').stop();
    await stack.box.keystore.proc.stop();
    await stack.kms.stop();

    // the keystore's own record
    let injected = 0;
    let lost = 0;
    let auditOk = false;
    let auditEntries = 0;
    const injectedKeys = new Map<string, string>(); // record id -> uid
    const dbs = openDbs(stack.box.keystore.dataDir, { readOnly: true });
    try {
      const ecuKeys = new Map<string, string>();
      for (const { key, value: rec } of dbs.keys.getRange({})) {
        if (rec.state !== 'INJECTED' && rec.state !== 'REPORTED') continue;
        injected++;
        const id = String(key);
        injectedKeys.set(id, rec.uid!);
        const prior = ecuKeys.get(`${rec.pool}|${rec.uid}`);
        if (prior) {
          duplicates++;
          problems.push(`ECU ${rec.uid} holds two injected keys of ${rec.pool}: ${prior} and ${id}`);
        }
        ecuKeys.set(`${rec.pool}|${rec.uid}`, id);
      }
      for (const [id, uid] of confirmed) {
        const rec = dbs.keys.get(id);
        if (!rec || !['INJECTED', 'REPORTED'].includes(rec.state) || rec.uid !== uid) {
          lost++;
          problems.push(`confirmed ${id} for ECU ${uid} is ${rec ? `${rec.state} for ${rec.uid}` : 'gone'}`);
        }
      }
      const report = verifyAudit(dbs, createPublicKey({ key: auditSpki, format: 'der', type: 'spki' }));
      auditOk = report.problems.length === 0;
      auditEntries = report.entries;
      for (const p of report.problems.slice(0, 5)) problems.push(`audit: ${String(p)}`);
    } finally {
      await dbs.root.close();
    }

    // the KMS's record: every injected key VERIFIED there, for the same ECU
    let kmsMissing = 0;
    const store = new KmsStore(path.join(stack.kms.dir, 'state'));
    try {
      for (const [id, uid] of injectedKeys) {
        const r = store.injections.get(id);
        if (!r || r.state !== 'VERIFIED' || r.uid !== uid.toLowerCase()) {
          kmsMissing++;
          if (kmsMissing <= 5) problems.push(`KMS record of ${id}: ${r ? `${r.state} ${r.uid}` : 'missing'}`);
        }
      }
    } finally {
      await store.close();
    }
    return {
      kills,
      killsBy,
      seconds: Math.round(killSeconds),
      ecus,
      confirmed: confirmed.size,
      injected,
      retries,
      stuck,
      duplicates,
      lost,
      audit_ok: auditOk,
      audit_entries: auditEntries,
      kms_verified: kmsVerified,
      kms_missing: kmsMissing,
      problems,
    };
  } finally {
    killing = false;
    await stack.stop();
  }
}
