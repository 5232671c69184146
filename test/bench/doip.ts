// Issue 15's figures: injections per second per DoIP connection, and where one ECU's time goes.
//   direct   the baseline: one station, package → SHE simulator in process → confirm (no ECU link)
//   doip x1  one station, one DoIP connection, pks-inject's library: session, security access,
//            UID, package, M1-M3 by RoutineControl/WDBI, proof, confirm, reset, ECU after ECU
//   doip x4  four stations, four DoIP connections to one entity, at once
//   uds only the DoIP + UDS part alone (SHE messages computed locally, no box): the link's ceiling
// Run alone: `node --import tsx test/bench/doip.ts` (last line one JSON object), or through
// `./build.sh bench`, which merges these keys into its own last line.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DoipClient } from '../../appliance/doip/client.js';
import { boxClient, type BoxApi } from '../../appliance/inject/box.js';
import { injectEcu, type EcuResult, type Step } from '../../appliance/inject/inject.js';
import { sheMessages } from '../../appliance/she.js';
import { UdsClient } from '../../appliance/uds/client.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor, securityKey } from '../../appliance/uds/mapping.js';
import { LOAD_QUOTAS, startBox } from '../../scripts/plant/box.js';
import { randomSheKeys } from '../../scripts/plant/batch.js';
import { SheEcu } from '../../scripts/plant/ecu-sim.js';
import { UdsEcu, serveDoip } from '../../scripts/plant/ecu-uds.js';
import { percentile } from '../../scripts/plant/line.js';
import { startTesterApi } from '../../scripts/plant/tester-api.js';

const SECONDS = Number(process.env.PKS_BENCH_DOIP_SECONDS ?? 8);
const POOL = 'oem1.bcm.key4';
const r2 = (x: number): number => Math.round(x * 100) / 100;

export async function benchDoip(o: { say?: (s: string) => void } = {}): Promise<Record<string, unknown>> {
  const say = o.say ?? ((s: string) => void process.stdout.write(s + '\n'));
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-bench-doip-'));
  const master = randomBytes(16);
  // bench quotas: the plant defaults (500 keys an hour per tester) would stop a bench in seconds
  const box = await startBox({ base: path.join(base, 'box'), pools: [{ pool: POOL, minimum: 1, reorder: 1 }], checkpointEvery: 1000, quotas: LOAD_QUOTAS });
  const stops: (() => Promise<unknown>)[] = [() => box.stop()];
  try {
    await box.importChunks(box.batch('doip-bench', { pool: POOL, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: master, keys: randomSheKeys('db', 60_000) }));
    const testers = Array.from({ length: 4 }, (_, i) => ({ cn: `doip-station-${i}`, station: `bench-${i}`, pools: [POOL] }));
    const api = await startTesterApi({
      dir: path.join(base, 'tester-api'),
      runDir: box.runDir,
      logDir: box.logDir,
      testers,
      keystoreAdmin: box.keystore.client('pksctl'),
      vault: box.vault.client('tester-api'),
      limits: { requestsPerSecond: 100_000, burst: 100_000, newReservationsPerHour: 10_000_000, handshakesPerWindow: 100_000 },
    });
    stops.push(() => api.stop());
    const boxes: BoxApi[] = api.testers.map((t) => boxClient({ url: api.url, ca: api.boxCa, cert: t.cert, key: t.key }));
    stops.push(() => Promise.all(boxes.map((b) => b.close())));
    const mapping = mappingFor(DEFAULT_MAPPING, POOL);
    const ecus = new Map<number, UdsEcu>();
    let nextAddr = 0;
    const newEcu = (): { addr: number; ecu: UdsEcu } => {
      const addr = 0x2000 + (nextAddr++ % 0xd000);
      const ecu = new UdsEcu({ type: mapping.type, mapping, uid: Buffer.concat([Buffer.from([0x30]), randomBytes(14)]), masterKey: master });
      ecus.set(addr, ecu);
      return { addr, ecu };
    };
    const entity = await serveDoip({ identity: { vin: 'WPKSBENCH00000001', logicalAddress: 0x1000, eid: randomBytes(6), gid: randomBytes(6) }, ecus: (a) => ecus.get(a), tcp: { host: '127.0.0.1', port: 0 }, maxSockets: 8 });
    stops.push(() => entity.close());
    const connect = async (sa: number): Promise<DoipClient> => {
      const c = await DoipClient.connect({ host: '127.0.0.1', port: entity.tcpPort!, sourceAddress: sa });
      await c.activate();
      stops.push(async () => c.close());
      return c;
    };
    const loop = async (ms: number, one: () => Promise<boolean>): Promise<{ n: number; errors: number; lat: number[]; s: number }> => {
      const lat: number[] = [];
      let errors = 0;
      const t0 = performance.now();
      while (performance.now() - t0 < ms) {
        const s = performance.now();
        if (await one()) lat.push(performance.now() - s);
        else errors++;
      }
      const s = (performance.now() - t0) / 1000;
      return { n: lat.length, errors, lat: lat.sort((a, b) => a - b), s };
    };
    const warm = Math.min(2000, SECONDS * 250);

    // baseline: the same station work without an ECU link
    const direct = async (b: BoxApi): Promise<boolean> => {
      const uid = Buffer.concat([Buffer.from([0x31]), randomBytes(14)]);
      const ecu = new SheEcu(uid, master);
      const p = await b.reserve(POOL, uid.toString('hex'));
      const r = ecu.loadKey(Buffer.from(p.m1, 'hex'), Buffer.from(p.m2, 'hex'), Buffer.from(p.m3, 'hex'));
      return (await b.confirm(p.packageId, r.m4, r.m5)).verified;
    };
    await loop(warm, () => direct(boxes[0]!));
    const d = await loop(SECONDS * 1000, () => direct(boxes[0]!));
    const directPerS = d.n / d.s;
    say(`direct    ${directPerS.toFixed(1).padStart(8)} injections/s   p50 ${percentile(d.lat, 50).toFixed(1)} ms   (one station, no ECU link, ${d.errors} errors)`);

    // one DoIP connection, ECU after ECU, with the step breakdown
    const c1 = await connect(0x0e80);
    const results: EcuResult[] = [];
    const viaDoip = (c: DoipClient, b: BoxApi, keep?: EcuResult[]) => async (): Promise<boolean> => {
      const { addr } = newEcu();
      const r = await injectEcu({ box: b, link: c.link(addr), pool: POOL, mapping: DEFAULT_MAPPING, securitySecret: devSecuritySecret, attempts: 1 });
      ecus.delete(addr);
      keep?.push(r);
      return r.ok;
    };
    await loop(warm, viaDoip(c1, boxes[0]!));
    const x1 = await loop(SECONDS * 1000, viaDoip(c1, boxes[0]!, results));
    const perConn = x1.n / x1.s;
    const steps: Step[] = ['session', 'security', 'uid', 'reserve', 'load', 'confirm', 'reset'];
    const ok = results.filter((r) => r.ok);
    const breakdown: Record<string, number> = {};
    for (const s of steps) breakdown[s] = r2(ok.reduce((a, r) => a + (r.steps[s] ?? 0), 0) / Math.max(1, ok.length));
    breakdown.total = r2(ok.reduce((a, r) => a + r.ms, 0) / Math.max(1, ok.length));
    say(`doip x1   ${perConn.toFixed(1).padStart(8)} injections/s   p50 ${percentile(x1.lat, 50).toFixed(1)} ms   p99 ${percentile(x1.lat, 99).toFixed(1)} ms   (one DoIP connection, ${x1.errors} errors)`);
    say(`          one ECU, mean ms: ${Object.entries(breakdown).map(([k, v]) => `${k} ${v}`).join(', ')}`);

    // four stations on four connections at once
    const conns = [c1, ...(await Promise.all([0x0e81, 0x0e82, 0x0e83].map((sa) => connect(sa))))];
    const x4s = await Promise.all(conns.map((c, i) => loop(SECONDS * 1000, viaDoip(c, boxes[i]!))));
    const total4 = x4s.reduce((a, r) => a + r.n / r.s, 0);
    say(`doip x4   ${total4.toFixed(1).padStart(8)} injections/s   (${(total4 / 4).toFixed(1)} per connection, four connections at once)`);

    // the link alone: DoIP + UDS with locally computed packages
    const udsOnly = async (): Promise<boolean> => {
      const { addr, ecu } = newEcu();
      const cl = new UdsClient(c1.link(addr));
      await cl.session(mapping.session);
      await cl.securityAccess(mapping.securityLevel!, (seed) => securityKey('aes128-cmac', devSecuritySecret(mapping.type, mapping.securityLevel!), seed));
      await cl.readDid(mapping.uidDid);
      const m = sheMessages({ uid: ecu.uid, keyId: 4, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter: 1, flags: 0 });
      await cl.routine(0x0301, Buffer.concat([m.m1, m.m2, m.m3]));
      await cl.ecuReset(1);
      ecus.delete(addr);
      return true;
    };
    const uo = await loop(Math.max(2000, SECONDS * 500), udsOnly);
    const udsPerS = uo.n / uo.s;
    say(`uds only  ${udsPerS.toFixed(1).padStart(8)} ECUs/s         p50 ${percentile(uo.lat, 50).toFixed(2)} ms   (DoIP + UDS + SHE simulator, no box)`);
    return {
      doip_injections_per_s_per_connection: r2(perConn),
      doip_p50_ms: r2(percentile(x1.lat, 50)),
      doip_p99_ms: r2(percentile(x1.lat, 99)),
      doip_x4_injections_per_s: r2(total4),
      doip_direct_per_s: r2(directPerS),
      doip_vs_direct: r2(perConn / directPerS),
      doip_uds_only_per_s: r2(udsPerS),
      doip_ecu_breakdown_ms: breakdown,
      doip_errors: x1.errors + x4s.reduce((a, r) => a + r.errors, 0),
    };
  } finally {
    for (const s of stops.reverse()) await s().catch(() => {});
    await rm(base, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await benchDoip();
  process.stdout.write(JSON.stringify(r) + '\n');
  process.exit(0);
}
