// Rolling an update out in waves (pks-fleet rollout): a canary share of the boxes first, then
// the rest in equal waves; each wave must end with every box reporting a good update before the
// next is announced, and the first failure (a refusal, a fallback, or a box that does not report
// within the deadline) stops the rollout: no further box gets the manifest.
export interface WavePlan {
  waves: string[][];
}

/** Canary = ceil(share * n) boxes (at least 1), the rest split into `waves` equal waves. */
export function planWaves(boxes: readonly string[], canaryShare: number, waves: number): WavePlan {
  if (!(canaryShare > 0 && canaryShare <= 1)) throw new Error('canary share must be in (0, 1]');
  if (!(Number.isInteger(waves) && waves >= 1)) throw new Error('waves must be a positive integer');
  const all = [...new Set(boxes)].sort();
  if (all.length === 0) return { waves: [] };
  const canary = Math.max(1, Math.ceil(canaryShare * all.length));
  const out: string[][] = [all.slice(0, canary)];
  const rest = all.slice(canary);
  const per = Math.ceil(rest.length / waves);
  for (let i = 0; i < rest.length; i += per) out.push(rest.slice(i, i + per));
  return { waves: out };
}

export type BoxUpdateState = 'pending' | 'ok' | 'failed';

export interface RolloutDeps {
  announce(boxId: string): Promise<void>;
  /** where the box stands with this update (from its update-status at the KMS) */
  state(boxId: string): Promise<{ state: BoxUpdateState; detail?: string }>;
  pollMs: number;
  /** per wave */
  timeoutMs: number;
  onEvent?(e: Record<string, unknown>): void;
}

export interface RolloutReport {
  ok: boolean;
  done: string[];
  failed: { boxId: string; detail: string } | null;
  notStarted: string[];
}

export async function rollout(plan: WavePlan, d: RolloutDeps): Promise<RolloutReport> {
  const done: string[] = [];
  for (let w = 0; w < plan.waves.length; w++) {
    const wave = plan.waves[w]!;
    d.onEvent?.({ wave: w, boxes: wave, phase: 'announce' });
    for (const b of wave) await d.announce(b);
    const end = Date.now() + d.timeoutMs;
    const open = new Set(wave);
    while (open.size > 0) {
      for (const b of [...open]) {
        const s = await d.state(b);
        if (s.state === 'ok') {
          open.delete(b);
          done.push(b);
        } else if (s.state === 'failed') {
          return { ok: false, done, failed: { boxId: b, detail: s.detail ?? 'update failed' }, notStarted: plan.waves.slice(w + 1).flat() };
        }
      }
      if (open.size === 0) break;
      if (Date.now() > end) {
        const b = [...open][0]!;
        return { ok: false, done, failed: { boxId: b, detail: 'no result before the wave deadline' }, notStarted: plan.waves.slice(w + 1).flat() };
      }
      await new Promise((r) => setTimeout(r, d.pollMs));
    }
    d.onEvent?.({ wave: w, phase: 'done' });
  }
  return { ok: true, done, failed: null, notStarted: [] };
}

/** A box's state for one update version, from the last update-status the KMS holds. */
export function stateFor(update: Record<string, unknown> | null | undefined, version: string, announcedAt: number): { state: BoxUpdateState; detail?: string } {
  if (!update) return { state: 'pending' };
  const at = Date.parse(String(update.receivedAt ?? update.at ?? ''));
  if (!(at >= announcedAt)) return { state: 'pending' };
  if (update.type !== 'update-result') return { state: 'pending' };
  if (update.ok === true && update.version === version) return { state: 'ok' };
  if (update.ok === false) return { state: 'failed', detail: `${String(update.code ?? '?')}: ${String(update.detail ?? '')}`.slice(0, 200) };
  return { state: 'pending' };
}
