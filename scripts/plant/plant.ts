// The whole plant on one machine, as `./build.sh demo` runs it and the e2e test checks it:
// mosquitto (TLS, client certificates, ACLs), the reference KMS with its OEM key material, an
// SMTP server for alert mails, and one appliance: vault, keystore, uplink, sentinel and
// tester API as separate processes. Stock starts empty; the box is registered and filled
// over MQTT; the line runs; the KMS is held offline while stock falls below its minimum (a
// low-stock mail), comes back, answers the re-order (a resolved mail); at the end every
// injection is verified at the KMS.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';
import { writePlantSentinelConfig } from '../../services/sentinel/plant-config.js';
import { startBox, type Box } from './box.js';
import { startBroker, type TestBroker } from './broker.js';
import { registerBox, writeUplinkConfig } from './enrol.js';
import { startKms, type TestKms } from './kms.js';
import { percentile, runLine, type LineResult } from './line.js';
import { startService, waitFor, type Proc } from './process.js';
import { startSmtp, type TestSmtp } from './smtp.js';
import { startTesterApi, type TesterApiHandle } from './tester-api.js';
import { ensureServiceUsers, pairGroups, prepareServiceUser, separateUsers } from './users.js';

export interface PlantOptions {
  base: string;
  testers: number;
  ecus: number;
  say?: (s: string) => void;
}

export interface PlantSummary {
  ecus: number;
  injected: number;
  verified: number;
  burned: number;
  /** ECUs reworked on the strict SHE: key loaded, proof lost, replacement with a higher counter taken */
  reworked: number;
  /** extra ECUs whose slot already held a newer key (refused by the ECU, key burned) */
  occupied: number;
  duplicates: number;
  p50_ms: number;
  p99_ms: number;
  kms_verified: number;
  reorders: number;
  alert_mails: number;
  audit_ok?: boolean;
  /** ECUs injected over DoIP + UDS by the demo's DoIP phase (scripts/plant/doip-phase.ts) */
  doip_injected?: number;
  /** issue 16 §2: boxes of the demo's cluster phase and whether its fail-over held (scripts/plant/cluster-phase.ts) */
  cluster_boxes?: number;
  failover_ok?: boolean;
}

export interface Plant {
  box: Box;
  broker: TestBroker;
  kms: TestKms;
  smtp: TestSmtp;
  api: TesterApiHandle;
  uplink: Proc;
  sentinel: Proc;
  summary: PlantSummary;
  /** the line's pools with their SHE master keys (what simulated ECUs start with) */
  linePools: { pool: string; masterKey: Buffer }[];
  stop(): Promise<void>;
}

const POOLS = [
  { pool: 'oem1.bcm.key4', keyId: 4, oem: 'oem1' },
  { pool: 'oem1.gateway.key5', keyId: 5, oem: 'oem1' },
];

/** The real uid of a running process (/proc), '?' when it is gone. */
const uidOf = (pid: number | undefined): string => {
  try {
    return /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? '?';
  } catch {
    return '?';
  }
};

export async function runPlant(o: PlantOptions): Promise<Plant> {
  const say = o.say ?? (() => {});
  const perPool = Math.ceil(o.ecus / POOLS.length);
  // re-order sizes such that the line crosses each pool's minimum at least once
  const reorder = Math.max(20, Math.ceil(perPool / 2));
  const minimum = Math.max(10, Math.ceil(reorder / 3));
  const masterKeys = POOLS.map(() => randomBytes(16));
  const boxId = 'box-plant1-01';
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch(() => {});
  };
  try {
    await mkdir(o.base, { recursive: true });
    const broker = await startBroker(); // its own temp dir, which user mosquitto can reach
    stops.push(() => broker.stop());
    say(`mosquitto: TLS + client certificates + per-box ACLs on 127.0.0.1:${broker.port}`);
    const smtp = await startSmtp();
    stops.push(() => smtp.stop());
    say(`SMTP server for alert mails on 127.0.0.1:${smtp.port}`);
    const kms = await startKms(broker, path.join(o.base, 'kms'));
    stops.push(() => kms.stop());
    say('reference KMS: running, its own CA pinned by the box');

    const box = await startBox({ base: path.join(o.base, 'box'), boxId, pools: POOLS.map((p) => ({ pool: p.pool, minimum, reorder })), checkpointEvery: 100, kmsCa: kms.caCert });
    stops.push(() => box.stop());
    say(`box ${boxId}: vault on a fresh SoftHSM token, keystore LMDB empty`);
    const vs = await box.vault.client('pksctl').call<{ ready: boolean; hsm: { tokenLabel: string; manufacturer: string; keys: Record<string, boolean> } }>('status');
    say(`vault status: ready=${vs.ready}, token '${vs.hsm.tokenLabel}' (${vs.hsm.manufacturer}), keys: ${Object.entries(vs.hsm.keys).map(([k, v]) => `${k}${v ? '' : ' MISSING'}`).join(', ')}`);
    for (const name of ['identity', 'transport', 'audit', 'ecu-ca']) {
      const { spki } = await box.vault.client('pksctl').call<{ spki: string }>('public-key', { name });
      say(`  ${name.padEnd(9)} P-256 public key, SHA-256 of SPKI ${createHash('sha256').update(Buffer.from(spki, 'base64')).digest('hex').slice(0, 32)}...`);
    }

    // plant IT's setup: register the box's public keys with the KMS; the OEM's key material
    await registerBox(kms, box);
    const oemFile = path.join(o.base, 'oem-keys.json');
    await writeFile(
      oemFile,
      JSON.stringify({ v: 1, oem: 'oem1', pools: POOLS.map((p, i) => ({ pool: p.pool, she: { keyId: p.keyId, authKeyId: 1, counter: 1, flags: 0 }, authKey: masterKeys[i]!.toString('hex'), generate: perPool * 4 + 200 })) }),
    );
    await kms.fleet.call('import-oem', { path: oemFile });
    say(`KMS: box registered; OEM SHE keys imported for ${POOLS.map((p) => p.pool).join(', ')}`);

    // the uplink: MQTT v5 with the box's client certificate, always connected
    const upDir = path.join(o.base, 'uplink');
    // each service under its own user, as on the box (issue 9, item 8; scripts/plant/users.ts)
    const separate = separateUsers() && ensureServiceUsers();
    const upCfg = await writeUplinkConfig({ dir: upDir, boxId, broker, kmsCaFile: kms.caCert, timing: { tickSeconds: 0.3, chunkTimeoutSeconds: 2, reorderRetrySeconds: 5, ackTimeoutSeconds: 2, statusSeconds: 2 }, ...(separate ? { ipcGroups: pairGroups('uplink', ['sentinel', 'updater']) } : {}) });
    const upUser = prepareServiceUser('uplink', { separate, own: [upDir], runDir: box.runDir, reach: [path.dirname(kms.caCert)] });
    const uplink = startService('uplink', { PKS_CONFIG: upCfg, PKS_RUN_DIR: box.runDir }, box.logDir, 'uplink', upUser);
    stops.push(() => uplink.stop());

    const admin = box.keystore.client('pksctl');
    const stats = async () => (await admin.call<StatsResponse>('stats')).pools;
    await waitFor('first stock over MQTT', async () => Object.values(await stats()).every((s) => s.available >= reorder), 90_000, 200);
    say(`uplink: stock was empty, re-ordered ${reorder} keys per pool; batches arrived over MQTT and were imported`);


    const testers = Array.from({ length: o.testers }, (_, i) => ({ cn: `eol-tester-${String(i + 1).padStart(2, '0')}`, station: `line1-st${i + 1}`, pools: POOLS.map((p) => p.pool) }));
    const api = await startTesterApi({ dir: path.join(o.base, 'tester-api'), runDir: box.runDir, logDir: box.logDir, testers, keystoreAdmin: admin, vault: box.vault.client('tester-api') });
    stops.push(() => api.stop());
    say(`tester-api: mutual TLS on ${api.url}, ${o.testers} testers registered`);

    // the sentinel watches from here on (an empty box before its first fill is not news)
    const sentinelCfg = await writePlantSentinelConfig({ dir: path.join(o.base, 'sentinel'), boxId, smtpPort: smtp.port, keystoreDataDir: box.keystore.dataDir, keystoreMapSizeMb: 4096, everySeconds: 1, services: ['vault', 'keystore', 'tester-api', 'uplink'], uplinkStatusFile: path.join(box.runDir, 'uplink', 'status.json'), testerApi: true });
    const sentinelUser = prepareServiceUser('sentinel', { separate, own: [path.join(o.base, 'sentinel')], runDir: box.runDir, reach: [box.keystore.dataDir] });
    const sentinel = startService('sentinel', { PKS_CONFIG: sentinelCfg, PKS_RUN_DIR: box.runDir }, box.logDir, 'sentinel', sentinelUser);
    stops.push(() => sentinel.stop());
    const uids = Object.fromEntries(
      Object.entries({ vault: box.vault.proc, keystore: box.keystore.proc, 'tester-api': api.proc, uplink, sentinel }).map(([n, p]) => [n, uidOf(p.child.pid)]),
    );
    say(`users: ${Object.entries(uids).map(([n, u]) => `${n} uid ${u}`).join(', ')}${new Set(Object.values(uids)).size === Object.keys(uids).length ? ' (each its own)' : ' (NOT separated: run as root for that)'}`);

    const linePools = POOLS.map((p, i) => ({ pool: p.pool, masterKey: masterKeys[i]! }));
    const results: LineResult[] = [];
    const run = async (ecus: number, pools = linePools): Promise<void> => {
      if (ecus > 0) results.push(await runLine({ api, testers: api.testers, pools, ecus, failEvery: 50, onEmpty: 'wait' }));
    };

    // 1: production with the KMS online
    const phase1 = Math.floor(o.ecus / 4);
    await run(phase1);
    say(`line: ${phase1} ECUs with the KMS online`);

    // 2: the WAN is down: production goes on from stock, the first pool falls below its minimum
    await kms.stop();
    const s = await stats();
    const p0 = POOLS[0]!.pool;
    const phase2 = Math.min(o.ecus - phase1, Math.max(0, s[p0]!.available - Math.floor(minimum / 2)));
    await run(phase2, [linePools[0]!]);
    say(`line: ${phase2} ECUs on ${p0} with the KMS offline; stock ${(await stats())[p0]!.available} < minimum ${minimum}`);
    await waitFor('low-stock mail', async () => smtp.mails.some((m) => /stock/i.test(m.subject) && !/resolved/i.test(m.subject)), 30_000, 200);
    say(`sentinel: low-stock mail sent: "${smtp.mails.find((m) => /stock/i.test(m.subject))!.subject}"`);

    // 3: the KMS is back: the queued re-order is answered, the alert resolves
    await kms.restart();
    await waitFor('re-order after outage', async () => (await stats())[p0]!.available >= minimum, 90_000, 200);
    await waitFor('resolved mail', async () => smtp.mails.some((m) => /resolved/i.test(m.subject)), 30_000, 200);
    say(`KMS back: re-order answered, stock refilled; sentinel: "${smtp.mails.find((m) => /resolved/i.test(m.subject))!.subject}"`);

    // 4: the rest of the shift
    await run(o.ecus - phase1 - phase2);

    const line = merge(results);
    // everything owed to the KMS is delivered and acknowledged
    await box.keystore.client('uplink').call('checkpoint', {});
    let kmsVerified = 0;
    await waitFor(
      'KMS verified every injection',
      async () => {
        const b = await kms.fleet.call<{ counters: { verified: number } }>('box', { boxId });
        kmsVerified = b.counters.verified;
        return kmsVerified >= line.injected;
      },
      120_000,
      500,
    );
    // and the sentinel has caught up: every alert raised during the shift is resolved again
    await waitFor(
      'alerts resolved',
      async () => {
        const count = (re: RegExp): number => smtp.mails.filter((m) => re.test(m.subject)).length;
        return count(/ raised: /) > 0 && count(/ raised: /) === count(/ RESOLVED: /);
      },
      30_000,
      300,
    ).catch(() => say('sentinel: some alerts still open at the end of the shift'));
    const upState = JSON.parse(await readFile(path.join(upDir, 'state', 'uplink-state.json'), 'utf8').catch(() => '{}')) as { reorders?: number };
    const summary: PlantSummary = {
      ecus: line.ecus,
      injected: line.injected,
      verified: line.verified,
      burned: line.burned,
      reworked: line.reworked,
      occupied: line.occupied,
      duplicates: line.duplicates,
      p50_ms: line.p50_ms,
      p99_ms: line.p99_ms,
      kms_verified: kmsVerified,
      reorders: upState.reorders ?? 0,
      alert_mails: smtp.mails.length,
    };
    return { box, broker, kms, smtp, api, uplink, sentinel, summary, linePools, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

function merge(rs: LineResult[]): LineResult {
  const issued = new Map<string, string>();
  let duplicates = 0;
  for (const r of rs)
    for (const [pkg, uid] of r.issued) {
      const prior = issued.get(pkg);
      if (prior && prior !== uid) duplicates++;
      issued.set(pkg, uid);
    }
  const sum = (k: 'ecus' | 'injected' | 'verified' | 'burned' | 'reworked' | 'occupied' | 'errors' | 'seconds'): number => rs.reduce((a, r) => a + r[k], 0);
  const latencies = rs.flatMap((r) => r.latencies).sort((a, b) => a - b);
  return {
    ecus: sum('ecus'),
    injected: sum('injected'),
    verified: sum('verified'),
    burned: sum('burned'),
    reworked: sum('reworked'),
    occupied: sum('occupied'),
    duplicates: duplicates + rs.reduce((a, r) => a + r.duplicates, 0),
    errors: sum('errors'),
    seconds: sum('seconds'),
    p50_ms: Number(percentile(latencies, 50).toFixed(2)),
    p99_ms: Number(percentile(latencies, 99).toFixed(2)),
    issued,
    latencies,
  };
}
