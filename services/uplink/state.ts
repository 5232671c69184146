// The uplink's own small persistent state, one JSON file written atomically (temp file,
// fsync, rename): a crash leaves the old or the new state, never half of one. What must
// survive a restart: the last accepted command seq (or a replay would pass), the pending
// re-order per pool (or a restart would ask twice), the schedule ops set, open alerts, and
// the rotated MQTT identity (identity.ts).
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import type { Schedule } from './config.js';
import type { StoredIdentity } from './identity.js';

export interface PendingReorder {
  requestId: string;
  count: number;
  at: string;
}
export interface BatchProgress {
  pool: string;
  chunks: number;
  missing: number[];
  lastAt: string;
}
export interface UplinkState {
  lastSeq: number;
  pending: Record<string, PendingReorder>;
  schedule: Schedule | null;
  lastSync: string | null;
  alerts: Array<{ code: string; detail: string; at: string }>;
  batches: Record<string, BatchProgress>;
  reorders: number;
  /** the MQTT client identity from the last rotate-cert; null = the one in the config */
  identity: StoredIdentity | null;
}

const EMPTY: UplinkState = { lastSeq: 0, pending: {}, schedule: null, lastSync: null, alerts: [], batches: {}, reorders: 0, identity: null };

export class StateFile {
  readonly file: string;
  state: UplinkState;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = path.join(dir, 'uplink-state.json');
    let text: string | null = null;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw pksError('PKS_STORE_FAILURE', 'uplink state cannot be read');
    }
    if (text === null) this.state = structuredClone(EMPTY);
    else {
      try {
        this.state = { ...structuredClone(EMPTY), ...(JSON.parse(text) as Partial<UplinkState>) };
      } catch {
        // refusing to start is safer than forgetting the last command seq (replays)
        throw pksError('PKS_STORE_FAILURE', 'uplink state file is corrupt');
      }
    }
  }

  save(): void {
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(this.state));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
  }

  update(fn: (s: UplinkState) => void): void {
    fn(this.state);
    this.save();
  }
}
