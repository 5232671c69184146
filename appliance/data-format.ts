// Data-format versions of what lives on the data partition (it outlives every update) and the
// rule for changing one: forward-only migrations that run only once the slot that needs them
// was marked good. Until then the new code reads the old format (the health check runs on it),
// so a fallback finds the data as the old slot left it. After mark-good the updater writes the
// booted version into `migrations-allowed` (services/updater/updater.ts); a service migrates at
// start only when that file names its own version. An old slot that the bootloader still falls
// back to later refuses a newer format (PKS_DATA_FORMAT_NEWER) instead of misreading it.
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { pksError } from './errors.js';
import { writeFileDurably } from './durable-file.js';

export interface Migration {
  /** the format this step produces (from = to - 1) */
  to: number;
  run(dir: string): Promise<void> | void;
}

const FILE = 'FORMAT';

export function readFormat(dir: string): number {
  try {
    const n = Number(readFileSync(path.join(dir, FILE), 'utf8').trim());
    return Number.isSafeInteger(n) && n >= 1 ? n : 1;
  } catch {
    return 1;
  }
}

/** The updater's marker: after mark-good, migrations of `version` may run. */
export const MIGRATIONS_ALLOWED_FILE = 'migrations-allowed';
export function allowMigrations(updaterStateDir: string, version: string): void {
  mkdirSync(updaterStateDir, { recursive: true });
  writeFileDurably(path.join(updaterStateDir, MIGRATIONS_ALLOWED_FILE), version, 0o644);
}
export function migrationsAllowed(updaterStateDir: string, version: string): boolean {
  try {
    return readFileSync(path.join(updaterStateDir, MIGRATIONS_ALLOWED_FILE), 'utf8').trim() === version;
  } catch {
    return false;
  }
}

/**
 * At a service's start: refuses data newer than `known`; runs the pending steps in order when
 * allowed (each step's result is durable before FORMAT names it, so a power cut repeats at
 * most the step it cut); returns the format the service now runs on.
 */
export async function openDataFormat(dir: string, known: number, steps: readonly Migration[], allowed: boolean): Promise<number> {
  let cur = readFormat(dir);
  if (cur > known) throw pksError('PKS_DATA_FORMAT_NEWER', `data format ${cur} is newer than this software's ${known}`);
  if (!allowed) return cur;
  for (const s of [...steps].sort((a, b) => a.to - b.to)) {
    if (s.to <= cur || s.to > known) continue;
    if (s.to !== cur + 1) throw pksError('PKS_INTERNAL', `migration to ${s.to} skips ${cur + 1}`);
    await s.run(dir);
    writeFileDurably(path.join(dir, FILE), String(s.to), 0o600);
    cur = s.to;
  }
  return cur;
}
