// Caller separation as the box has it, for the plant-in-a-box and the tests (issue 9, item 8):
// run as root, each service runs under its own user and group (pks-vault, pks-keystore, ...)
// with the supplementary pair groups of sysusers.d/pks.conf, and every server chgrp's each
// caller's socket to the pair group pks-<server>-<caller> (0660). So the kernel, not only a verb
// table, keeps the tester API's user off the uplink's vault socket.
// The users and groups are the image's own: systemd-sysusers applies
// rootfs-overlay/usr/lib/sysusers.d/pks.conf to this machine, creating what is missing (and
// nothing else). Not root: everything runs as the caller, as before.
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './process.js';

export interface ServiceUser {
  name: string;
  uid: number;
  gid: number;
}

let ensured: boolean | null = null;

/** True when services are to run under their own users: root, and not turned off by PKS_SEPARATE_USERS=0. */
export function separateUsers(): boolean {
  return process.getuid?.() === 0 && process.env.PKS_SEPARATE_USERS !== '0';
}

/** Creates the image's users and groups on this machine when missing; false when not root. */
export function ensureServiceUsers(): boolean {
  if (ensured !== null) return ensured;
  if (!separateUsers()) return (ensured = false);
  execFileSync('systemd-sysusers', [path.join(ROOT, 'rootfs-overlay/usr/lib/sysusers.d/pks.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  return (ensured = true);
}

const getent = (db: 'passwd' | 'group', name: string): string[] => {
  try {
    return execFileSync('getent', [db, name], { encoding: 'utf8' }).trim().split(':');
  } catch {
    throw new Error(`${db} entry ${name} missing (systemd-sysusers did not create it)`);
  }
};

/** The user a service runs as on the box (pks-<service>). */
export function serviceUser(service: string): ServiceUser {
  const f = getent('passwd', `pks-${service}`);
  return { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]) };
}

export const groupId = (name: string): number => Number(getent('group', name)[2]);

/** caller → gid of pks-<server>-<caller>, for a server's ipc.groups. */
export function pairGroups(server: string, callers: readonly string[]): Record<string, number> {
  return Object.fromEntries(callers.map((c) => [c, groupId(`pks-${server}-${c}`)]));
}

/** Hands a tree to a service user (its data, config and runtime dirs), as StateDirectory= would. */
export function giveTo(u: ServiceUser, ...paths: string[]): void {
  const walk = (p: string): void => {
    const st = lstatSync(p);
    chownSync(p, u.uid, u.gid);
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(path.join(p, e));
  };
  for (const p of paths) walk(p);
}

/** Lets every service user pass through (not list) the directories from `dir` up to `top`. */
export function openPath(dir: string, top: string): void {
  let d = path.resolve(dir);
  const stop = path.resolve(top);
  for (;;) {
    const mode = lstatSync(d).mode & 0o777;
    chmodSync(d, mode | 0o111);
    if (d === stop || d === path.dirname(d)) break;
    d = path.dirname(d);
  }
}

/**
 * As root (and unless `separate` is false): the user `service` runs as, with its own tree and
 * its runtime directory (<runDir>/<service>) handed to it and the paths up to them passable, as
 * StateDirectory= and RuntimeDirectory= do on the box. Undefined: run as the caller.
 */
export function prepareServiceUser(service: string, o: { separate?: boolean; own: string[]; runDir: string; reach?: string[] }): ServiceUser | undefined {
  if (!((o.separate ?? true) && ensureServiceUsers())) return undefined;
  const u = serviceUser(service);
  const run = path.join(o.runDir, service);
  mkdirSync(run, { recursive: true });
  giveTo(u, ...o.own, run);
  for (const p of [...o.own, o.runDir, ...(o.reach ?? [])]) openPath(p, '/');
  return u;
}
