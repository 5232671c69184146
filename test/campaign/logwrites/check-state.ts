// One crash state, checked as the box would meet it after power came back: the ext4 image
// through e2fsck (journal replayed, then a full read-only check), the keystore's files taken out
// with debugfs, the LMDB opened as the keystore opens it (read-write, services/keystore/db.ts)
// and every named database read through, then the issuance records and the audit chain against
// what the testers had been told by then (checkKeystore, ../line.ts).
import { spawnSync } from 'node:child_process';
import type { KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { openDbs, type Dbs } from '../../../services/keystore/db.js';
import { checkKeystore } from '../line.js';

/** What the testers had been told at a point of the log. */
export interface Told {
  /** package id -> ECU UID: handed out */
  issued: Map<string, string>;
  /** package id -> ECU UID: confirmed INJECTED */
  confirmed: Map<string, string>;
}

export interface StateResult {
  /** e2fsck's exit code replaying the journal (0 or 1: fine) */
  fsckReplay: number;
  /** the state had a journal to recover (what a boot's mount would replay) */
  journalReplayed: boolean;
  /** e2fsck -fn after the replay: 0 when the file system is consistent */
  fsckCheck: number;
  lmdbOpens: boolean;
  duplicates: number;
  lost: number;
  auditOk: boolean;
  auditEntries: number;
  problems: string[];
}

export const stateOk = (r: StateResult): boolean => r.fsckReplay <= 1 && r.fsckCheck === 0 && r.lmdbOpens && r.duplicates === 0 && r.lost === 0 && r.auditOk;

const E2FSCK = existsSync('/usr/sbin/e2fsck') ? '/usr/sbin/e2fsck' : 'e2fsck';
const DEBUGFS = existsSync('/usr/sbin/debugfs') ? '/usr/sbin/debugfs' : 'debugfs';

function run(cmd: string, args: string[]): { status: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, E2FSPROGS_FSCK_FORCE_INTERACTIVE: '' } });
  if (r.error) throw r.error;
  return { status: r.status ?? 128, out: `${r.stdout}${r.stderr}` };
}

/** Every named database read through (the key records are, by checkKeystore): a torn B-tree anywhere throws here. */
function walk(dbs: Dbs): void {
  for (const [name, db] of Object.entries(dbs)) {
    if (name === 'root' || name === 'keys') continue;
    for (const e of (db as Dbs['meta']).getRange({})) void e.value;
  }
}

/**
 * Checks the ext4 image `image` (changed: the journal is replayed into it). `work` is an empty
 * directory for the files taken out; `dataPath` is the LMDB directory inside the image.
 */
export async function checkState(image: string, work: string, told: Told, auditKey: KeyObject, dataPath = '/'): Promise<StateResult> {
  const res: StateResult = { fsckReplay: -1, journalReplayed: false, fsckCheck: -1, lmdbOpens: false, duplicates: 0, lost: 0, auditOk: false, auditEntries: 0, problems: [] };
  const replay = run(E2FSCK, ['-y', '-E', 'journal_only', image]);
  res.fsckReplay = replay.status;
  res.journalReplayed = /recovering journal/.test(replay.out);
  const check = run(E2FSCK, ['-fn', image]);
  res.fsckCheck = check.status;
  if (check.status !== 0) {
    res.problems.push(`e2fsck -fn: exit ${check.status}: ${check.out.trim().split('\n').slice(-3).join(' / ')}`);
    // as a boot's fsck would: repaired, then the keystore starts on what is left
    run(E2FSCK, ['-fy', image]);
  }
  mkdirSync(work, { recursive: true });
  const cmds = path.join(work, 'debugfs.cmd');
  const dir = path.join(work, 'data');
  mkdirSync(dir, { recursive: true });
  writeFileSync(cmds, ['data.mdb', 'lock.mdb'].map((f) => `dump ${path.posix.join(dataPath, f)} ${path.join(dir, f)}\n`).join(''));
  const dump = run(DEBUGFS, ['-f', cmds, image]);
  if (!existsSync(path.join(dir, 'data.mdb'))) {
    res.problems.push(`data.mdb not in the image: ${dump.out.trim().split('\n').slice(-2).join(' / ')}`);
    return res;
  }
  let dbs: Dbs | undefined;
  try {
    // as the keystore opens it (config mapSizeMb of the dev image)
    dbs = openDbs(dir, { mapSizeMb: 1024 });
    walk(dbs);
    res.lmdbOpens = true;
    const c = checkKeystore(dbs, told.confirmed, auditKey, told.issued);
    res.duplicates = c.duplicates;
    res.lost = c.lost;
    res.auditOk = c.audit_ok;
    res.auditEntries = c.audit_entries;
    res.problems.push(...c.problems);
  } catch (e) {
    res.problems.push(`LMDB: ${(e as Error).message}`);
  } finally {
    await dbs?.root.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
  return res;
}
