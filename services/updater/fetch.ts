// Fetching a bundle a manifest announced, so that an interruption (link down, power cut) costs
// only what was not yet on disk:
//  - from a URL on the plant network: HTTP Range from the length of the partial file (`.part`,
//    fsync'd as it grows); a server that ignores Range (200) restarts the file from zero;
//  - as chunks over MQTT: each chunk written at its offset, the set received kept in a small
//    sidecar file, so a restart asks only for the missing ones.
// Either way the whole file must have the manifest's size and sha256 before it is renamed to its
// final name; anything else is PKS_UPDATE_CORRUPT and the partial file is dropped.
import { createHash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, fstatSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { pksError } from '../../appliance/errors.js';
import { writeFileDurably } from '../../appliance/durable-file.js';

export interface FetchTarget {
  /** final path; `${file}.part` while incomplete */
  file: string;
  size: number;
  sha256: string;
}

export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const b of createReadStream(file)) h.update(b as Buffer);
  return h.digest('hex');
}

async function finish(t: FetchTarget): Promise<void> {
  const part = `${t.file}.part`;
  const size = statSync(part).size;
  if (size !== t.size) throw pksError('PKS_UPDATE_CORRUPT', `downloaded ${size} bytes, manifest says ${t.size}`);
  const got = await sha256File(part);
  if (got !== t.sha256) {
    rmSync(part, { force: true });
    throw pksError('PKS_UPDATE_CORRUPT', 'downloaded bundle does not match the manifest sha256');
  }
  renameSync(part, t.file);
}

/** Downloads (or resumes) `url` into t.file. onProgress(bytes on disk, total). */
export async function fetchUrl(url: string, t: FetchTarget, onProgress: (have: number, total: number) => void, signal?: AbortSignal): Promise<void> {
  if (existsSync(t.file) && statSync(t.file).size === t.size) return;
  const part = `${t.file}.part`;
  const fd = openSync(part, 'a+', 0o600);
  try {
    let have = fstatSync(fd).size;
    if (have > t.size) throw pksError('PKS_UPDATE_CORRUPT', 'partial download is larger than the bundle');
    if (have < t.size) {
      let res: Response;
      try {
        res = await fetch(url, { headers: have > 0 ? { range: `bytes=${have}-` } : {}, ...(signal ? { signal } : {}), redirect: 'error' });
      } catch (e) {
        throw pksError('PKS_UPDATE_DOWNLOAD', `fetch failed: ${(e as Error).message.slice(0, 120)}`);
      }
      if (res.status === 200 && have > 0) {
        // the server ignored the range: start over
        closeSync(openSync(part, 'w'));
        have = 0;
      } else if (res.status !== 200 && res.status !== 206) {
        throw pksError('PKS_UPDATE_DOWNLOAD', `server answered ${res.status}`);
      }
      if (!res.body) throw pksError('PKS_UPDATE_DOWNLOAD', 'no body');
      let sinceSync = 0;
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          if (have + chunk.length > t.size) throw pksError('PKS_UPDATE_CORRUPT', 'server sends more than the manifest size');
          writeSync(fd, chunk, 0, chunk.length, have);
          have += chunk.length;
          sinceSync += chunk.length;
          // what is on disk is what a resume may skip: sync every MiB
          if (sinceSync >= 1 << 20) {
            fsyncSync(fd);
            sinceSync = 0;
          }
          onProgress(have, t.size);
        }
      } catch (e) {
        fsyncSync(fd);
        if ((e as { code?: string }).code?.startsWith('PKS_')) throw e;
        throw pksError('PKS_UPDATE_DOWNLOAD', `download interrupted at ${have} of ${t.size} bytes`);
      }
      fsyncSync(fd);
    }
  } finally {
    closeSync(fd);
  }
  await finish(t);
}

/** Chunks over MQTT: writes one chunk; true when the file is complete and verified. */
export async function putChunk(t: FetchTarget & { chunkSize: number; count: number }, i: number, data: Buffer): Promise<{ complete: boolean; missing: number[] }> {
  if (!Number.isInteger(i) || i < 0 || i >= t.count) throw pksError('PKS_UPDATE_CORRUPT', 'chunk index out of range');
  const expected = i === t.count - 1 ? t.size - i * t.chunkSize : t.chunkSize;
  if (data.length !== expected) throw pksError('PKS_UPDATE_CORRUPT', `chunk ${i} has ${data.length} bytes, not ${expected}`);
  const part = `${t.file}.part`;
  const sidecar = `${t.file}.chunks`;
  let got: number[] = [];
  try {
    got = JSON.parse(readFileSync(sidecar, 'utf8')) as number[];
  } catch {
    got = [];
  }
  const have = new Set(got);
  if (!have.has(i)) {
    const fd = openSync(part, existsSync(part) ? 'r+' : 'w+', 0o600);
    try {
      writeSync(fd, data, 0, data.length, i * t.chunkSize);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    have.add(i);
    // the chunk is on disk before the sidecar says so
    writeFileDurably(sidecar, JSON.stringify([...have].sort((a, b) => a - b)), 0o600);
  }
  const missing: number[] = [];
  for (let k = 0; k < t.count && missing.length < 1000; k++) if (!have.has(k)) missing.push(k);
  if (missing.length > 0) return { complete: false, missing };
  await finish(t);
  rmSync(sidecar, { force: true });
  return { complete: true, missing: [] };
}
