// Issue 14's figures: unlock tokens signed per second and the p99 of one token request, for
// engineers over mTLS keep-alive (HTTPS → unlock service → keystore record, durable, with its
// audit entry → vault builds and signs in SoftHSM), beside the floor: the vault verb alone
// over its local socket (no HTTP, no record). Run by ./build.sh bench through run.ts, or alone:
//   node --import tsx test/bench/unlock.ts   (last line: one JSON object)
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { startBox } from '../../scripts/plant/box.js';
import { startUnlock, unlockCall } from '../../scripts/plant/unlock.js';

const SECONDS = Number(process.env.PKS_BENCH_UNLOCK_SECONDS ?? process.env.PKS_BENCH_SECONDS ?? 8);
const USERS = Number(process.env.PKS_BENCH_UNLOCK_USERS ?? 8);
const PER_USER = Number(process.env.PKS_BENCH_UNLOCK_CONCURRENCY ?? 2);

const pct = (xs: number[], p: number): number => (xs.length ? xs[Math.min(xs.length - 1, Math.ceil((p / 100) * xs.length) - 1)]! : NaN);
const r2 = (x: number): number => Math.round(x * 100) / 100;

async function loop(ms: number, workers: number, one: () => Promise<void>): Promise<{ perS: number; p50: number; p99: number; count: number; errors: number }> {
  const lat: number[] = [];
  let errors = 0;
  const end = Date.now() + ms;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (Date.now() < end) {
        const s = performance.now();
        try {
          await one();
          lat.push(performance.now() - s);
        } catch {
          errors++;
        }
      }
    }),
  );
  const secs = (Date.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  return { perS: lat.length / secs, p50: pct(lat, 50), p99: pct(lat, 99), count: lat.length, errors };
}

export async function unlockBench(o: { say?: (s: string) => void } = {}): Promise<Record<string, number>> {
  const say = o.say ?? (() => {});
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-bench-unlock-'));
  const box = await startBox({ pools: [], base });
  try {
    // limits far above the load: the figure is the service, not its rate limiter
    const svc = await startUnlock({ dir: path.join(base, 'unlock'), runDir: box.runDir, logDir: box.logDir, boxId: box.boxId, limits: { tokensPerMinute: 100_000, tokenBurst: 100_000, requestsPerSecond: 100_000, requestBurst: 100_000 } });
    try {
      const users: { c: ReturnType<typeof svc.client>; csrf: string }[] = [];
      for (let i = 0; i < USERS; i++) {
        const u = await svc.user(`bench-eng-${i}`, 'AFTER_SALES');
        const c = svc.client(u);
        const me = await unlockCall<{ csrf: string }>(c, 'GET', '/v1/me');
        users.push({ c, csrf: me.body.csrf });
      }
      const uid = '0102030405060708090a0b0c0d0e0f';
      let next = 0;
      const ask = async (): Promise<void> => {
        const u = users[next++ % users.length]!;
        const r = await unlockCall(u.c, 'POST', '/v1/tokens', { ecuType: 'bcm', uid, challenge: randomBytes(32).toString('hex') }, u.csrf);
        if (r.status !== 200) throw new Error(String(r.status));
      };
      await loop(1500, USERS * PER_USER, ask);
      const ours = await loop(SECONDS * 1000, USERS * PER_USER, ask);
      say(`unlock    ${ours.perS.toFixed(1).padStart(8)} tokens/s   p50 ${ours.p50.toFixed(1)} ms   p99 ${ours.p99.toFixed(1)} ms   (${ours.count} tokens, ${USERS} users x ${PER_USER}, mTLS → keystore record → vault, ${ours.errors} errors)`);
      const vault = box.vault.client('unlock');
      const now = () => Math.floor(Date.now() / 1000);
      const floor = await loop(SECONDS * 1000, USERS * PER_USER, async () => {
        await vault.call('unlock-token-sign', { key: 'oem1', tokenId: randomBytes(16).toString('hex'), ecuType: 'bcm', uid, challenge: randomBytes(32).toString('hex'), permissions: '0000000000000000000000000000000b', notBefore: now(), notAfter: now() + 3600 });
      });
      say(`floor     ${floor.perS.toFixed(1).padStart(8)} tokens/s   p50 ${floor.p50.toFixed(1)} ms   p99 ${floor.p99.toFixed(1)} ms   (the vault verb alone: build + HSM sign, no HTTP, no record)`);
      return {
        unlock_tokens_per_s: r2(ours.perS),
        unlock_p50_ms: r2(ours.p50),
        unlock_p99_ms: r2(ours.p99),
        unlock_floor_per_s: r2(floor.perS),
        unlock_floor_p99_ms: r2(floor.p99),
        unlock_vs_floor: r2(ours.perS / floor.perS),
        unlock_errors: ours.errors,
      };
    } finally {
      await svc.stop();
    }
  } finally {
    await box.stop();
    await rm(base, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await unlockBench({ say: (s) => console.log(s) });
  console.log(JSON.stringify(r));
}
