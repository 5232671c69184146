// Where the vault's gate gets its inputs, and why a compromised PKS service cannot forge them.
//
// The vault does not measure the trees itself: it runs as pks-vault and cannot read every file
// of /etc/pks (other services' configs are theirs), and a measurement that skips what it cannot
// read would miss exactly what it should see. pks-measure runs as root (CAP_DAC_READ_SEARCH
// only) and writes its verdict where only root can: /run/pks/live-measurements.json in
// /run/pks (root:pks-ipc 0750). So the vault takes the live measurement only from a regular
// file, not a link, owned by root and writable by nobody else, in a directory owned by root
// that nobody else may write (so it cannot be renamed over either), checked on the open file
// descriptor (no race between the check and the read); and only if it is fresh: a re-measure
// timer that stopped leaves a stale file, and stale counts as no measurement (fail closed).
// The network-facing services (tester API, uplink, unlock) run as their own users: whatever
// they do, they cannot write such a file.
//
// The provisioned value is not a file one trusts for where it lies: it is the record signed with
// the HSM identity key (gate.ts), stored in the vault's own state directory; whoever writes
// there without the HSM cannot make a record that verifies.
import { constants, fstatSync, fsyncSync, openSync, closeSync, readFileSync, statSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { writeFileDurably } from '../../appliance/durable-file.js';
import { parseLiveMeasurement, type LiveMeasurement } from '../../appliance/contracts/measurement.js';
import type { GateInputs, GateRecord } from './gate.js';

export interface GateFiles {
  /** the live measurement (pks-measure) */
  readonly live: string;
  /** the signed record (the vault's state directory) */
  readonly record: string;
  /** the only uid that may own and write the live measurement (root) */
  readonly writerUid: number;
  readonly maxAgeS: number;
}

const MAX_BYTES = 64 * 1024;

/** Reads a file only `uid` can have written; anything else is PKS_TAMPERED. */
export function readTrustedFile(file: string, uid: number): Buffer {
  const dir = statSync(path.dirname(file));
  if (dir.uid !== uid || dir.mode & 0o022) throw pksError('PKS_TAMPERED', 'the live measurement directory is writable by others');
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    throw pksError('PKS_TAMPERED', (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no live measurement of the application' : 'the live measurement cannot be opened');
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== uid || st.mode & 0o022 || st.size > MAX_BYTES) throw pksError('PKS_TAMPERED', 'the live measurement is not written by pks-measure alone');
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function readLive(f: GateFiles, now = Date.now()): LiveMeasurement {
  const live = parseLiveMeasurement(parseJsonOr('PKS_TAMPERED', 'live measurement', readTrustedFile(f.live, f.writerUid)));
  const age = (now - Date.parse(live.measuredAt)) / 1000;
  if (age > f.maxAgeS || age < -f.maxAgeS) throw pksError('PKS_TAMPERED', 'the live measurement is stale (is pks-measure-live.timer running?)');
  return live;
}

/** The pending record (an update's new slot) lies next to the record: `gate-record.next.json`. */
export const pendingFile = (f: GateFiles): string => f.record.replace(/(\.json)?$/, '.next.json');

export function readRecord(f: GateFiles, file = f.record): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return null; // unreadable or not JSON: malformed, the gate stays closed
  }
}

// Durable (fsync'd, renamed into place, directory synced): a record the vault answered for must
// survive a power cut, since the updater reboots into the slot it opens right after.
export async function writeRecord(f: GateFiles, r: GateRecord, file = f.record): Promise<void> {
  writeFileDurably(file, JSON.stringify(r) + '\n', 0o600);
}

/** The pending record becomes the record (one rename: a power cut leaves one or the other, both valid). */
export async function promotePending(f: GateFiles): Promise<void> {
  await rename(pendingFile(f), f.record);
  syncDir(f.record);
}

export async function dropPending(f: GateFiles): Promise<void> {
  await rm(pendingFile(f), { force: true });
  syncDir(f.record);
}

function syncDir(file: string): void {
  const fd = openSync(path.dirname(file), constants.O_RDONLY);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** The gate's inputs now: the record, and PCR 15 and the trees of the latest live measurement. */
export function gateInputs(f: GateFiles): GateInputs {
  const record = readRecord(f);
  const pending = readRecord(f, pendingFile(f));
  const live = readLive(f);
  return { record, ...(pending !== undefined ? { pending } : {}), bootPcr15: live.pcr15, live: live.trees };
}
