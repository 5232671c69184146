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
import { createReadStream } from 'node:fs';
import { lstat, readFile, readdir, readlink } from 'node:fs/promises';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';

export interface TreeManifest {
  readonly text: string;
  readonly files: number;
  readonly bytes: number;
}

const MAX_ENTRIES = 200_000;

async function fileSha256(p: string, size: number): Promise<string> {
  // most files are small: one read beats a stream's per-chunk round trips
  if (size <= 1 << 20) return createHash('sha256').update(await readFile(p)).digest('hex');
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
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
    rootStat = await lstat(dir);
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
  const walk = async (rel: string): Promise<void> => {
    const abs = rel === '.' ? dir : path.join(dir, rel);
    const st = await lstat(abs);
    if (entries.length >= MAX_ENTRIES) throw pksError('PKS_TOO_LARGE', `${dir} has too many entries to measure`);
    if (st.isDirectory()) {
      add(rel, `d ${mode(st.mode)}`);
      const names = (await readdir(abs)).sort(byBytes);
      for (const n of names) {
        const child = rel === '.' ? n : `${rel}/${n}`;
        if (!skip.has(child)) await walk(child);
      }
    } else if (st.isFile()) {
      add(rel, `f ${mode(st.mode)} ${st.size} ${await fileSha256(abs, st.size)}`);
      files += 1;
      bytes += st.size;
    } else if (st.isSymbolicLink()) {
      add(rel, `l ${esc(await readlink(abs))}`);
    } else {
      add(rel, `o ${mode(st.mode)}`);
    }
  };
  try {
    await walk('.');
  } catch (e) {
    if (e instanceof Error && e.name === 'PksError') throw e;
    throw pksError('PKS_CONFIG_UNREADABLE', `cannot read ${dir}`, e);
  }
  // Depth-first with sorted names is already byte order of the full paths except where a name
  // sorts before '/' ("a-b" vs "a/b"): sort the lines by path once more to make it exact.
  const sorted = entries.sort((a, b) => byBytes(a.p, b.p)).map((x) => x.line);
  return { text: sorted.join('\n') + '\n', files, bytes };
}
