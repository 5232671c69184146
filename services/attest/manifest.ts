// A deterministic manifest of a directory tree: what PCR 15 measures. The same code runs on the
// build host (over the staged rootfs, for the expected value) and in the appliance at boot, so the
// manifest depends only on what a measured boot should care about: names, types, permission
// bits, file contents and link targets. Owners, times and inode numbers are left out (they
// differ between the build host and the booted file system without changing behaviour).
//
// One line per entry, sorted by the byte order of the relative path ("." is the root):
//   d <mode> <path>
//   f <mode> <size> <sha256> <path>
//   l <target> <path>
//   o <mode> <path>            (sockets, fifos, devices: present, content not measured)
// Paths and link targets escape space, backslash and control bytes as \xNN, so a name cannot
// forge a line. An absent tree is the single line "absent".
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, openSync, readFileSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';

export interface TreeManifest {
  readonly text: string;
  readonly files: number;
  readonly bytes: number;
}

const MAX_ENTRIES = 200_000;

// Synchronous on purpose: every async fs call is a round trip through libuv's thread pool, and
// with ~5000 files that cost a minute of boot under QEMU TCG (measured) against seconds here.
function fileSha256(p: string, size: number): string {
  if (size <= 1 << 20) return createHash('sha256').update(readFileSync(p)).digest('hex');
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(1 << 20);
  const fd = openSync(p, 'r');
  try {
    let n: number;
    while ((n = readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}

const byBytes = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * Builds the manifest of `dir`. `exclude` holds relative paths (as in the manifest) whose
 * subtrees are left out, e.g. secrets that must not be hashed into a log anyone can read.
 */
export async function treeManifest(dir: string, exclude: readonly string[] = []): Promise<TreeManifest> {
  const skip = new Set(exclude);
  const entries: { p: string; line: string }[] = [];
  let files = 0;
  let bytes = 0;
  let rootStat;
  try {
    rootStat = lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { text: 'absent\n', files: 0, bytes: 0 };
    throw pksError('PKS_CONFIG_UNREADABLE', `cannot read ${dir}`, e);
  }
  if (!rootStat.isDirectory()) throw pksError('PKS_CONFIG_INVALID', `${dir} is not a directory`);

  const mode = (m: number): string => (m & 0o7777).toString(8).padStart(4, '0');
  const esc = (s: string): string => s.replace(/[\x00-\x20\x7f\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  const add = (p: string, line: string): void => {
    entries.push({ p, line: `${line} ${esc(p)}` });
  };
  const walk = (rel: string): void => {
    const abs = rel === '.' ? dir : path.join(dir, rel);
    const st = lstatSync(abs);
    if (entries.length >= MAX_ENTRIES) throw pksError('PKS_TOO_LARGE', `${dir} has too many entries to measure`);
    if (st.isDirectory()) {
      add(rel, `d ${mode(st.mode)}`);
      const names = readdirSync(abs).sort(byBytes);
      for (const n of names) {
        const child = rel === '.' ? n : `${rel}/${n}`;
        if (!skip.has(child)) walk(child);
      }
    } else if (st.isFile()) {
      add(rel, `f ${mode(st.mode)} ${st.size} ${fileSha256(abs, st.size)}`);
      files += 1;
      bytes += st.size;
    } else if (st.isSymbolicLink()) {
      add(rel, `l ${esc(readlinkSync(abs))}`);
    } else {
      add(rel, `o ${mode(st.mode)}`);
    }
  };
  try {
    walk('.');
  } catch (e) {
    if (e instanceof Error && e.name === 'PksError') throw e;
    throw pksError('PKS_CONFIG_UNREADABLE', `cannot read ${dir}`, e);
  }
  // Depth-first with sorted names is already byte order of the full paths except where a name
  // sorts before '/' ("a-b" vs "a/b"): sort the lines by path once more to make it exact.
  const sorted = entries.sort((a, b) => byBytes(a.p, b.p)).map((x) => x.line);
  return { text: sorted.join('\n') + '\n', files, bytes };
}
