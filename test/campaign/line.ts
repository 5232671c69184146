// What the kill campaign and the plant-fault tests (test/faults/) share: a tester station's
// injection of one simulated SHE ECU over mTLS (retried as a station does when an answer is
// lost), and the checks made afterwards from the stores themselves, not from what the services
// say: no key in two ECUs, nothing confirmed lost, the audit verifies, the KMS holds a VERIFIED
// record of every injected key for the same ECU.
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import path from 'node:path';
import type { ReserveResponse } from '../../appliance/contracts/keystore.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import type { Client } from 'undici';
import { call } from '../../scripts/plant/line.js';
import { KmsStore } from '../../scripts/kms/store.js';
import { verifyAudit } from '../../services/keystore/audit.js';
import { openDbs, ZERO, type Counters, type Dbs } from '../../services/keystore/db.js';
import { FIELD as STATE_FIELD } from '../../services/keystore/stock.js';
import type { CampaignPool, CampaignStack } from './stack.js';

type Pkg = ReserveResponse & { code?: string };

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** What the testers saw, across all of them. */
export interface LineTally {
  pkgToUid: Map<string, string>;
  /** packageId -> ECU UID, confirmed (verified) by the tester API */
  confirmed: Map<string, string>;
  ecus: number;
  retries: number;
  stuck: number;
  duplicates: number;
  problems: string[];
}

export const newTally = (): LineTally => ({ pkgToUid: new Map(), confirmed: new Map(), ecus: 0, retries: 0, stuck: 0, duplicates: 0, problems: [] });

/** One ECU at the station: package, strict SHE simulator, confirm with M4/M5; false if stuck. */
export async function injectEcu(c: Client, p: CampaignPool, t: LineTally, giveUpMs = 180_000): Promise<boolean> {
  const uid = randomBytes(15);
  uid[0] = 0x30; // never the wildcard UID
  const hex = uid.toString('hex');
  t.ecus++;
  const ecu = new SheEcu(uid, p.masterKey);
  let proof: { m4: Buffer; m5: Buffer } | undefined;
  const until = Date.now() + giveUpMs;
  while (Date.now() < until) {
    try {
      const r = await call<Pkg>(c, 'POST', '/v1/she/packages', { pool: p.pool, uid: hex });
      // confirmed before a fault, the answer was lost: the retry is told, with the package id
      const already = r.body as { code?: string; packageId?: string };
      if (r.status === 409 && already.code === 'PKS_ALREADY_INJECTED' && t.pkgToUid.get(already.packageId!) === hex) {
        t.confirmed.set(already.packageId!, hex);
        return true;
      }
      if (r.status !== 200) throw new Error(`reserve ${r.status} ${already.code ?? ''}`);
      const prior = t.pkgToUid.get(r.body.packageId);
      if (prior && prior !== hex) {
        t.duplicates++;
        t.problems.push(`package ${r.body.packageId} went to ECUs ${prior} and ${hex}`);
      }
      t.pkgToUid.set(r.body.packageId, hex);
      // an ECU that took this key already (its confirmation lost) answers with the same proof
      proof ??= ecu.loadKey(Buffer.from(r.body.m1, 'hex'), Buffer.from(r.body.m2, 'hex'), Buffer.from(r.body.m3, 'hex'));
      const k = await call<{ state: string; verified: boolean }>(c, 'POST', `/v1/she/packages/${r.body.packageId}/confirm`, { m4: proof.m4.toString('hex'), m5: proof.m5.toString('hex') });
      if (k.status !== 200) throw new Error(`confirm ${k.status}`);
      if (!k.body.verified) t.problems.push(`package ${r.body.packageId}: confirm answered 200 but not verified`);
      t.confirmed.set(r.body.packageId, hex);
      return true;
    } catch {
      t.retries++;
      await sleep(40);
    }
  }
  t.stuck++;
  t.problems.push(`ECU ${hex} got no confirmed injection within ${giveUpMs / 1000} s`);
  return false;
}

export interface StoreCheck {
  injected: number;
  /** confirmed by a tester but not INJECTED/REPORTED for that ECU in the keystore */
  lost: number;
  audit_ok: boolean;
  audit_entries: number;
  kms_missing: number;
  /** key record id -> ECU UID, every INJECTED/REPORTED key in the keystore */
  injectedKeys: Map<string, string>;
  /** every key record the keystore holds, any state */
  keystoreKeys: number;
}

export interface KeystoreCheck {
  /** INJECTED/REPORTED records */
  injected: number;
  /** confirmed by a tester but not INJECTED/REPORTED for that ECU in the keystore */
  lost: number;
  /** an ECU holding two injected keys of a pool; a handed-out package back in stock or bound to another ECU */
  duplicates: number;
  audit_ok: boolean;
  audit_entries: number;
  /** key record id -> ECU UID, every INJECTED/REPORTED key */
  injectedKeys: Map<string, string>;
  keystoreKeys: number;
  problems: string[];
}

/**
 * What must hold in a keystore's LMDB against what the testers were told: `confirmed` (package
 * id -> ECU UID the tester API confirmed as INJECTED) is INJECTED/REPORTED for that ECU, no ECU
 * holds two injected keys of a pool, the audit chain and its checkpoints verify with `auditKey`
 * (the vault's, never taken from the store). With `handedOut` (package id -> ECU UID of every
 * package a tester received), each of those is still bound to its ECU and its reservation, and
 * not back in the AVAILABLE queue: a key that left the box is never issued again.
 */
export function checkKeystore(dbs: Dbs, confirmed: ReadonlyMap<string, string>, auditKey: KeyObject, handedOut?: ReadonlyMap<string, string>): KeystoreCheck {
  const problems: string[] = [];
  let injected = 0;
  let lost = 0;
  let duplicates = 0;
  let keystoreKeys = 0;
  const injectedKeys = new Map<string, string>();
  const ecuKeys = new Map<string, string>();
  // per pool, the records in each state: the counters (stats, the re-order trigger) must agree
  // with them in this one read, or a chunk was imported twice or a move lost its counter
  const byState = new Map<string, Counters>();
  for (const { key, value: rec } of dbs.keys.getRange({})) {
    keystoreKeys++;
    const tally = byState.get(rec.pool) ?? { ...ZERO };
    tally[STATE_FIELD[rec.state]]++;
    byState.set(rec.pool, tally);
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
  const pools = new Set([...byState.keys(), ...[...dbs.counters.getKeys({})].map(String)]);
  for (const pool of pools) {
    const held = byState.get(pool) ?? ZERO;
    const said = dbs.counters.get(pool) ?? ZERO;
    const off = (Object.keys(ZERO) as (keyof Counters)[]).filter((f) => held[f] !== said[f]);
    if (off.length) problems.push(`pool ${pool}: counters ${off.map((f) => `${f} ${said[f]}`).join(', ')} against records ${off.map((f) => `${f} ${held[f]}`).join(', ')}`);
  }
  for (const [id, uid] of confirmed) {
    const rec = dbs.keys.get(id);
    if (!rec || !['INJECTED', 'REPORTED'].includes(rec.state) || rec.uid !== uid) {
      lost++;
      problems.push(`confirmed ${id} for ECU ${uid} is ${rec ? `${rec.state} for ${rec.uid}` : 'gone'}`);
    }
  }
  if (handedOut?.size) {
    const queued = new Set<string>();
    for (const { value } of dbs.avail.getRange({})) queued.add(value);
    for (const [id, uid] of handedOut) {
      const rec = dbs.keys.get(id);
      const why = !rec
        ? 'gone'
        : rec.state === 'AVAILABLE' || queued.has(id)
          ? 'back in the AVAILABLE queue'
          : rec.uid !== uid
            ? `bound to ECU ${rec.uid}`
            : rec.state !== 'BURNED' && dbs.resv.get(`${rec.pool}|${uid}`) !== id
              ? `not the reservation of its ECU (${String(dbs.resv.get(`${rec.pool}|${uid}`))})`
              : undefined;
      if (why) {
        duplicates++;
        problems.push(`package ${id} handed out for ECU ${uid} is ${why}`);
      }
    }
  }
  const report = verifyAudit(dbs, auditKey);
  for (const p of report.problems.slice(0, 5)) problems.push(`audit: ${String(p)}`);
  return { injected, lost, duplicates, audit_ok: report.problems.length === 0, audit_entries: report.entries, injectedKeys, keystoreKeys, problems };
}

/**
 * Stops the tester API, uplink, keystore and KMS of the stack (the vault stays for the audit
 * key) and checks the keystore's LMDB and the KMS's LMDB against what the testers saw. Problems
 * and duplicates found are added to `t`.
 */
export async function checkStores(stack: CampaignStack, t: LineTally): Promise<StoreCheck> {
  const auditSpki = Buffer.from((await stack.box.vault.client('pksctl').call<{ spki: string }>('public-key', { name: 'audit' })).spki, 'base64');
  await stack.api.stop();
  await stack.proc('uplink').stop();
  await stack.box.keystore.proc.stop();
  await stack.kms.stop();

  let c: KeystoreCheck;
  const dbs = openDbs(stack.box.keystore.dataDir, { readOnly: true });
  try {
    c = checkKeystore(dbs, t.confirmed, createPublicKey({ key: auditSpki, format: 'der', type: 'spki' }));
  } finally {
    await dbs.root.close();
  }
  t.duplicates += c.duplicates;
  t.problems.push(...c.problems);
  const { injected, lost, injectedKeys, keystoreKeys } = c;
  const auditOk = c.audit_ok;
  const auditEntries = c.audit_entries;

  let kmsMissing = 0;
  const store = new KmsStore(path.join(stack.kms.dir, 'state'));
  try {
    for (const [id, uid] of injectedKeys) {
      const r = store.injections.get(id);
      if (!r || r.state !== 'VERIFIED' || r.uid !== uid.toLowerCase()) {
        kmsMissing++;
        if (kmsMissing <= 5) t.problems.push(`KMS record of ${id}: ${r ? `${r.state} ${r.uid}` : 'missing'}`);
      }
    }
  } finally {
    await store.close();
  }
  return { injected, lost, audit_ok: auditOk, audit_entries: auditEntries, kms_missing: kmsMissing, injectedKeys, keystoreKeys };
}
