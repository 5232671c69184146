// The demo's short cluster phase (issue 16 §2): two more boxes of one plant on the demo's broker
// and KMS, a shift of ECUs through the tester library's cluster client, one box SIGKILLed
// mid-shift (its keystore: coded 503s) and then the other (its tester API: connection
// failures). `failover_ok`: every ECU injected, no package twice, no ECU slot with two keys
// at the KMS, every key that left a box on record there, both audits verify.
import path from 'node:path';
import type { Plant } from './plant.js';
import { checkCluster, runShift, startMember, stats, type ClusterMember } from './cluster.js';
import { waitFor } from './process.js';

export async function runClusterPhase(plant: Plant, base: string, say: (s: string) => void, ecus = 40): Promise<{ cluster_boxes: number; failover_ok: boolean }> {
  const line = plant.linePools[0]!;
  const pools = [{ pool: line.pool, minimum: 10, reorder: 40 }];
  const testers = Array.from({ length: 4 }, (_, i) => ({ cn: `eol-cluster-${i + 1}`, station: `line2-st${i + 1}`, pools: [line.pool] }));
  const dir = path.join(base, 'cluster');
  const members: ClusterMember[] = [];
  try {
    const a = await startMember({ base: dir, boxId: 'box-plant2-01', plant: 'plant2', broker: plant.broker, kms: plant.kms, pools, testers });
    members.push(a);
    const b = await startMember({ base: dir, boxId: 'box-plant2-02', plant: 'plant2', broker: plant.broker, kms: plant.kms, pools, testers, pkiDir: path.join(dir, a.boxId, 'tester-api', 'pki') });
    members.push(b);
    await waitFor('cluster stock', async () => (await stats(a))[line.pool]!.available >= 40 && (await stats(b))[line.pool]!.available >= 40, 60_000, 200);
    say(`\n== cluster: plant2 with ${members.length} boxes (${members.map((m) => m.boxId).join(', ')}), disjoint stock from the KMS`);
    const before = (await plant.kms.fleet.call<{ items: { state: string }[] }>('report', { limit: 1_000_000 })).items.filter((i) => i.state === 'VERIFIED').length;
    const r = await runShift({
      members,
      pools: [line],
      ecus,
      stations: 4,
      events: [
        { at: Math.floor(ecus / 4), run: () => a.box.keystore.proc.kill9() },
        { at: Math.floor(ecus / 2), run: async () => (await a.box.keystore.restart(), await b.api.proc.kill9()) },
      ],
    });
    await b.api.restart();
    const c = await checkCluster(plant.kms, members, before + ecus);
    const ok = r.injected === ecus && r.duplicates === 0 && r.failovers >= 4 && c.doubleSlots === 0 && c.reserved === 0 && c.onRecord === c.out && c.kmsVerified >= before + ecus && c.auditOk.every(Boolean);
    say(`cluster shift: ${r.injected}/${ecus} ECUs injected while ${a.boxId}'s keystore and then ${b.boxId}'s tester API were SIGKILLed; ${r.failovers} fail-overs, ${r.relayed} proofs relayed through the other box`);
    say(`cluster check: ${c.onRecord}/${c.out} keys that left a box on record at the KMS, ${c.doubleSlots} ECU slots with two keys, audits ${c.auditOk.map((x) => (x ? 'VERIFIED' : 'BROKEN')).join(' + ')}: ${ok ? 'fail-over OK' : 'FAILED'}`);
    return { cluster_boxes: members.length, failover_ok: ok };
  } finally {
    for (const m of members.reverse()) await m.stop();
  }
}
