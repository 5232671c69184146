// The kill campaign (issue 17.1): testers inject simulated SHE ECUs over mTLS while one killer
// per service SIGKILLs the vault, the keystore, the tester API and the uplink at random moments
// and restarts it as systemd would. When the kills stop, the uplink drains to the KMS; then
// what must hold is checked from the stores themselves, not from what the services say:
//   - no key in two ECUs (tester view, keystore LMDB, KMS records), no ECU with two keys;
//   - every injection a tester saw confirmed is INJECTED/REPORTED for that ECU in the keystore;
//   - the audit chain verifies with the HSM audit key;
//   - the KMS holds a VERIFIED record for every injected key, for the same ECU.
import { waitFor } from '../../scripts/plant/process.js';
import { checkStores, injectEcu, newTally, sleep } from './line.js';
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


export async function runKillCampaign(o: KillOptions): Promise<KillResult> {
  const say = o.say ?? (() => {});
  const testers = o.testers ?? 4;
  const [gapMin, gapMax] = o.gapMs ?? [300, 1500];
  const t0 = Date.now();
  const stack = await startCampaignStack({ base: o.base, testers, minimum: 300, reorder: 600 });
  const killsBy = Object.fromEntries(KILL_TARGETS.map((t) => [t, 0])) as Record<KillTarget, number>;
  const tally = newTally();
  const { problems, confirmed } = tally;
  let kills = 0;
  let killing = true;
  try {
    say(`kill campaign: stack up in ${((Date.now() - t0) / 1000).toFixed(1)} s, stock from the KMS over MQTT`);
    const k0 = Date.now();
    const worker = async (w: number): Promise<void> => {
      const c = stack.api.client(stack.api.testers[w]!);
      let n = 0;
      while (killing) await injectEcu(c, stack.pools[(w + n++) % stack.pools.length]!, tally);
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
    const progress = setInterval(() => say(`  ${((Date.now() - k0) / 1000).toFixed(0)} s: ${kills} kills (${KILL_TARGETS.map((t) => `${t} ${killsBy[t]}`).join(', ')}), ${confirmed.size} injections confirmed, ${tally.retries} retried calls`), 30_000);
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

    const c = await checkStores(stack, tally);
    return {
      kills,
      killsBy,
      seconds: Math.round(killSeconds),
      ecus: tally.ecus,
      confirmed: confirmed.size,
      injected: c.injected,
      retries: tally.retries,
      stuck: tally.stuck,
      duplicates: tally.duplicates,
      lost: c.lost,
      audit_ok: c.audit_ok,
      audit_entries: c.audit_entries,
      kms_verified: kmsVerified,
      kms_missing: c.kms_missing,
      problems,
    };
  } finally {
    killing = false;
    await stack.stop();
  }
}
