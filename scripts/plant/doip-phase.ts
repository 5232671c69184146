// The demo's DoIP phase: a station injects simulated ECUs the way a real line does, over DoIP
// and UDS (scripts/plant/ecu-uds.ts behind one DoIP entity) with pks-inject's library, getting
// each package from the box over mTLS and confirming the ECU's proof. Every `failEvery`-th
// ECU refuses its first load (conditionsNotCorrect) and goes through rework with a fresh key.
import { randomBytes } from 'node:crypto';
import { DoipClient } from '../../appliance/doip/client.js';
import { boxClient } from '../../appliance/inject/box.js';
import { injectEcu, type EcuResult } from '../../appliance/inject/inject.js';
import { NRC } from '../../appliance/uds/codec.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveDoip } from './ecu-uds.js';
import type { LinePool } from './line.js';
import { percentile } from './line.js';
import type { TesterApiHandle } from './tester-api.js';

export interface DoipPhaseResult {
  doip_ecus: number;
  doip_injected: number;
  doip_verified: number;
  doip_burned: number;
  doip_p50_ms: number;
}

export async function runDoipPhase(o: { api: TesterApiHandle; pools: LinePool[]; ecus: number; failEvery?: number; say?: (s: string) => void }): Promise<DoipPhaseResult> {
  const say = o.say ?? (() => {});
  const ecus = new Map<number, UdsEcu>();
  const entity = await serveDoip({ identity: { vin: 'WPKSDEMO000000001', logicalAddress: 0x1000, eid: randomBytes(6), gid: randomBytes(6) }, ecus: (a) => ecus.get(a), tcp: { host: '127.0.0.1', port: 0 } });
  const t = o.api.testers[0]!;
  const box = boxClient({ url: o.api.url, ca: o.api.boxCa, cert: t.cert, key: t.key });
  const results: EcuResult[] = [];
  let doip: DoipClient | undefined;
  try {
    doip = await DoipClient.connect({ host: '127.0.0.1', port: entity.tcpPort!, sourceAddress: 0x0e80 });
    await doip.activate();
    say(`DoIP: station connected to the ECU bench on 127.0.0.1:${entity.tcpPort}, routing active`);
    for (let i = 0; i < o.ecus; i++) {
      const p = o.pools[i % o.pools.length]!;
      const m = mappingFor(DEFAULT_MAPPING, p.pool);
      const addr = 0x2000 + i;
      const ecu = new UdsEcu({ type: m.type, mapping: m, uid: Buffer.concat([Buffer.from([0x20]), randomBytes(14)]), masterKey: p.masterKey, pendingMs: 5 });
      if (o.failEvery && i % o.failEvery === o.failEvery - 1) ecu.faults.nrcOnce = { sid: m.load.via === 'routine' ? 0x31 : 0x2e, nrc: NRC.conditionsNotCorrect };
      ecus.set(addr, ecu);
      let r: EcuResult | undefined;
      // a pool that ran dry waits for the re-order, as a line waits
      for (let wait = 0; wait < 60; wait++) {
        r = await injectEcu({ box, link: doip.link(addr), pool: p.pool, mapping: DEFAULT_MAPPING, securitySecret: devSecuritySecret, attempts: 3 });
        if (r.ok || r.error?.code !== 'PKS_POOL_EMPTY') break;
        await new Promise((res) => setTimeout(res, 500));
      }
      results.push(r!);
      ecus.delete(addr);
    }
  } finally {
    doip?.close();
    await box.close();
    await entity.close();
  }
  const ok = results.filter((r) => r.ok);
  const ms = ok.map((r) => r.ms).sort((a, b) => a - b);
  const res: DoipPhaseResult = {
    doip_ecus: results.length,
    doip_injected: ok.length,
    doip_verified: ok.filter((r) => r.verified).length,
    doip_burned: results.reduce((a, r) => a + r.burned, 0),
    doip_p50_ms: Number(percentile(ms, 50).toFixed(2)),
  };
  say(`DoIP: ${res.doip_injected}/${res.doip_ecus} ECUs injected over DoIP + UDS (p50 ${res.doip_p50_ms} ms per ECU), ${res.doip_burned} keys burned in rework`);
  const failed = results.find((r) => !r.ok);
  if (failed) say(`DoIP: first failure: ${failed.error?.code}: ${failed.error?.detail}`);
  return res;
}
