// The uplink's own small persistent state, one JSON file written through the project's
// durable file write (temp file, fsync, rename, fsync of the directory): a power cut leaves the
// old or the new state, never half of one, and never an older one after a newer was used.
// What must survive a restart: the last accepted command seq (or a replay would pass), the
// pending re-order per pool (or a restart would ask twice), the schedule ops set, open alerts,
// and the rotated MQTT identity (identity.ts).
// A state file that cannot be read or parsed is not a reason to stay down for ever: it is
// moved aside, the uplink starts from an empty state in safe mode (ops commands refused with
// PKS_SAFE_MODE, since the last accepted seq is unknown) and leaves safe mode only when the
// KMS, asked on `resync`, answers with a signed last seq (uplink.ts).
import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import path from 'node:path';
import { writeFileDurably } from '../../appliance/durable-file.js';
import { pksError, type PksError } from '../../appliance/errors.js';
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
  /** set when the state was lost: commands are refused until the KMS re-synchronises */
  safeMode: boolean;
}

const EMPTY: UplinkState = { lastSeq: 0, pending: {}, schedule: null, lastSync: null, alerts: [], batches: {}, reorders: 0, identity: null, safeMode: false };

export class StateFile {
  readonly file: string;
  state: UplinkState;
  /** why the state was lost at start (null: it was read, or there was none yet) */
  readonly lost: PksError | null = null;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = path.join(dir, 'uplink-state.json');
    let text: string | null = null;
    let lost: PksError | null = null;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') lost = pksError('PKS_STORE_FAILURE', `uplink state cannot be read (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    this.state = structuredClone(EMPTY);
    if (text !== null) {
      try {
        const parsed = JSON.parse(text) as Partial<UplinkState>;
        if (!parsed || typeof parsed !== 'object' || !Number.isSafeInteger(parsed.lastSeq)) throw new Error('shape');
        this.state = { ...structuredClone(EMPTY), ...parsed };
      } catch {
        lost = pksError('PKS_STORE_FAILURE', 'uplink state file is corrupt');
      }
    }
    if (lost) {
      this.lost = lost;
      // kept for a person to look at; a fresh state in safe mode takes its place
      try {
        renameSync(this.file, `${this.file}.corrupt-${Date.now()}`);
      } catch {
        /* unreadable may also mean unrenamable: the save below replaces it */
      }
      this.state.safeMode = true;
      try {
        this.save();
      } catch {
        /* a full or broken disk: safe mode holds in memory, saves are tried again on change */
      }
    }
  }

  save(): void {
    writeFileDurably(this.file, JSON.stringify(this.state), 0o600);
  }

  update(fn: (s: UplinkState) => void): void {
    fn(this.state);
    this.save();
  }
}
