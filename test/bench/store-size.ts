// Issue 10, item 8: how long a store lasts. Issues N ECUs through the real keystore (LMDB on
// disk, an in-process vault on SoftHSM, the strict SHE simulator), the KMS acknowledges the
// injections and a checkpoint, and the store is measured as live LMDB pages (what the data
// takes, freelist excluded) before compaction (the baseline: every record as issued) and after
// it (ours). Prints the figures, the last line one JSON object:
//   node --import tsx test/bench/store-size.ts        (PKS_BENCH_ECUS=N, default 20000)
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadTrustAnchor } from '../../appliance/batch-format.js';
import { silentLogger } from '../../appliance/log.js';
import { buildBatch, randomSheKeys } from '../../scripts/plant/batch.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { makeKmsPki } from '../../scripts/plant/keystore.js';
import { makeToken } from '../../scripts/plant/vault.js';
import { openDbs, type Dbs } from '../../services/keystore/db.js';
import { Keystore } from '../../services/keystore/keystore.js';
import { Vault } from '../../services/vault/vault.js';
import { inProcessVaultPort } from './floor.js';

const N = Number(process.env.PKS_BENCH_ECUS ?? 20_000);
const POOL = 'oem1.size.4';
const BOX = 'box-size-1';
const GiB = 1024 ** 3;

/** Live bytes: pages of every named database and the root (freelist not counted). */
function liveBytes(dbs: Dbs): number {
  const pages = (s: { treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number }) => s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
  const root = dbs.root.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
  let total = pages(root);
  for (const [name, db] of Object.entries(dbs)) if (name !== 'root') total += pages((db as { getStats(): typeof root }).getStats());
  return total * root.pageSize;
}

const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-size-'));
try {
  const token = await makeToken(path.join(dir, 'hsm'), 'pks-size');
  const vault = new Vault({ module: token.module, tokenLabel: token.label, pin: token.pin, softhsm2Conf: token.conf }, BOX, silentLogger);
  vault.start();
  const kms = await makeKmsPki(path.join(dir, 'kms'));
  const dbs = openDbs(path.join(dir, 'lmdb'), { mapSizeMb: 1024 });
  const ks = new Keystore(dbs, inProcessVaultPort(vault), loadTrustAnchor(await readFile(kms.caCert, 'utf8')), BOX,
    { checkpointEvery: 1000, checkpointMs: 3_600_000, reservationTtlMs: 86_400_000, quotas: { openPerTester: 1e9, testerPerHour: 1e9, poolPerHour: 1e9 } }, silentLogger);
  await ks.setPool({ pool: POOL, minimum: 0, reorder: 1, critical: 0 });
  const master = Buffer.alloc(16, 7);
  const keys = randomSheKeys('sz', N);
  for (let b = 0; b < N; b += 2500) {
    for (const c of buildBatch({ batchId: `size-${b}`, boxId: BOX, transportSpki: vault.publicKey('transport'), signer: kms.signer, set: { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: keys.slice(b, b + 2500) } }))
      await ks.importer.importChunk(c);
  }
  const stocked = liveBytes(dbs);
  const t0 = performance.now();
  const W = 16;
  let next = 0;
  await Promise.all(Array.from({ length: W }, async (_, w) => {
    while (next < N) {
      const i = next++;
      const uid = (0x10_0000_0000 + i).toString(16).padStart(30, '1');
      const p = await ks.reserve({ pool: POOL, uid, tester: `tester-${w}`, station: `station-${w}` });
      const proof = new SheEcu(Buffer.from(uid, 'hex'), master).loadKey(Buffer.from(p.m1, 'hex'), Buffer.from(p.m2, 'hex'), Buffer.from(p.m3, 'hex'));
      await ks.confirm(p.packageId, `tester-${w}`, proof.m4.toString('hex'), proof.m5.toString('hex'));
    }
  }));
  const seconds = (performance.now() - t0) / 1000;
  // the KMS acknowledges every outbox item (injections become REPORTED), then a checkpoint
  const ackAll = async (): Promise<void> => {
    for (;;) {
      const items = await ks.outboxPeek(5000);
      if (!items.length) return;
      await ks.outboxAck(items.map((i) => i.id));
    }
  };
  await ackAll();
  await ks.checkpoint();
  await ackAll();
  const issued = liveBytes(dbs);
  let compacted = 0;
  for (let n = -1; n !== 0; compacted += n) n = await ks.compact(5000);
  const after = liveBytes(dbs);
  const per: Record<string, number> = {};
  for (const [name, db] of Object.entries(dbs)) {
    if (name === 'root') continue;
    const st = (db as { getStats(): { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number } }).getStats();
    const b = (st.treeBranchPageCount + st.treeLeafPageCount + st.overflowPages) * st.pageSize;
    if (b > 0) per[name] = Math.round(b / N);
  }
  const audit = (() => {
    let bytes = 0;
    for (const { value } of dbs.audit.getRange({})) bytes += value.line.length + value.h.length;
    return bytes;
  })();
  await ks.stop();
  vault.stop();
  const perBase = issued / N;
  const perOurs = after / N;
  console.log(`store-size: ${N} ECUs issued, reported, acknowledged in ${seconds.toFixed(1)} s; ${compacted} records compacted`);
  console.log(`  live store with ${N} keys in stock: ${(stocked / 1024 / 1024).toFixed(1)} MiB`);
  console.log(`  baseline (records as issued):   ${perBase.toFixed(0)} bytes per issued ECU -> ${Math.floor(GiB / perBase).toLocaleString('en')} ECUs per GiB, ${Math.floor((16 * GiB) / perBase).toLocaleString('en')} per 16 GiB`);
  console.log(`  ours (compacted after the ack): ${perOurs.toFixed(0)} bytes per issued ECU -> ${Math.floor(GiB / perOurs).toLocaleString('en')} ECUs per GiB, ${Math.floor((16 * GiB) / perOurs).toLocaleString('en')} per 16 GiB`);
  console.log(`  by database, bytes per ECU: ${Object.entries(per).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  console.log(`  of which the audit log (kept whole until the KMS-acknowledged anchor allows pruning): ${(audit / N).toFixed(0)} bytes of text per ECU`);
  console.log(JSON.stringify({
    ecus: N,
    bytes_per_ecu: Math.round(perOurs),
    bytes_per_ecu_baseline: Math.round(perBase),
    ecus_per_gib: Math.floor(GiB / perOurs),
    ecus_per_16gib: Math.floor((16 * GiB) / perOurs),
    ecus_per_gib_baseline: Math.floor(GiB / perBase),
    audit_bytes_per_ecu: Math.round(audit / N),
  }));
} finally {
  await rm(dir, { recursive: true, force: true });
}
