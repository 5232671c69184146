// The updater's durable state on the data partition (it outlives both slots): the phase of the
// update in flight, its target and the last result. Written with writeFileDurably before every
// step that a power cut could interrupt, so the service started after any cut knows where it
// stood (updater.ts recover()).
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileDurably } from '../../appliance/durable-file.js';
import { UPDATE_PHASES, type ManifestPayload, type UpdatePhase, type UpdateResult } from '../../appliance/contracts/update.js';

export interface Target {
  version: string;
  svn: number;
  /** the slot (bootname) it goes to: the one not booted when the install began */
  slot: string;
  /** the slot that was booted and good before */
  from: string;
  fromVersion: string;
  file: string;
  source: 'file' | 'manifest';
  /** audit head before the switch: the new slot must open the same data (health.ts) */
  dataMark?: { headSeq: number; headHash: string } | null;
  startedAt: string;
  /** manifest id, so the KMS can match the report */
  manifestId?: string;
}

export interface UpdaterState {
  phase: UpdatePhase;
  target: Target | null;
  last: UpdateResult | null;
  /** a downloaded bundle waiting for the maintenance window */
  staged: Target | null;
  /** a bundle a manifest announced: being fetched, or fetched and waiting (remote.ts) */
  download?: { manifest: ManifestPayload; file: string; installNow: boolean } | null;
}

const EMPTY: UpdaterState = { phase: 'idle', target: null, last: null, staged: null };

export class UpdaterStateFile {
  readonly file: string;
  state: UpdaterState;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = path.join(dir, 'updater-state.json');
    this.state = structuredClone(EMPTY);
    try {
      const s = JSON.parse(readFileSync(this.file, 'utf8')) as UpdaterState;
      if (UPDATE_PHASES.includes(s.phase)) this.state = { ...EMPTY, ...s };
    } catch {
      // first start, or a torn file that writeFileDurably never leaves: start idle
    }
  }

  update(fn: (s: UpdaterState) => void): void {
    const next = structuredClone(this.state);
    fn(next);
    writeFileDurably(this.file, JSON.stringify(next), 0o600);
    this.state = next;
  }
}
