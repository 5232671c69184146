// Captures and decodes with Wireshark's own tools: dumpcap on an interface with a BPF filter
// (started and stopped by PID), and tshark reading the file back with our ports mapped to the
// DoIP dissector. The conformance tests count what the dissectors call malformed.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const haveTshark = existsSync('/usr/bin/tshark') && existsSync('/usr/bin/dumpcap');

export interface Capture {
  file: string;
  stop(): Promise<void>;
}

export async function startCapture(o: { iface: string; filter: string; file: string; netns?: string }): Promise<Capture> {
  const args = ['-i', o.iface, '-f', o.filter, '-w', o.file, '-q'];
  const child: ChildProcess = o.netns ? spawn('ip', ['netns', 'exec', o.netns, 'dumpcap', ...args], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn('dumpcap', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`dumpcap did not start: ${err}`)), 10_000);
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      if (/File: /.test(err)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('exit', (c) => {
      clearTimeout(t);
      reject(new Error(`dumpcap exited ${c}: ${err}`));
    });
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    file: o.file,
    async stop() {
      // let the last segments reach the ring buffer before asking dumpcap to finish
      await new Promise((r) => setTimeout(r, 300));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** tshark -r FILE with decode-as rules, fields as rows of strings. */
export async function tsharkFields(file: string, decodeAs: string[], fields: string[], filter?: string, extra: string[] = []): Promise<string[][]> {
  const args = ['-r', file, '-n', ...decodeAs.flatMap((d) => ['-d', d]), ...extra, '-T', 'fields', '-E', 'separator=|', '-E', 'occurrence=a', '-E', 'aggregator=,', ...fields.flatMap((f) => ['-e', f])];
  if (filter) args.push('-Y', filter);
  const { stdout } = await run('tshark', args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => l.split('|'));
}

/** Frames tshark marks malformed or with an expert error, as its one-line summaries. */
export async function malformed(file: string, decodeAs: string[], extra: string[] = []): Promise<string[]> {
  const args = ['-r', file, '-n', ...decodeAs.flatMap((d) => ['-d', d]), ...extra, '-Y', '_ws.malformed || _ws.expert.severity == error'];
  const { stdout } = await run('tshark', args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout.split('\n').filter((l) => l.trim().length > 0);
}
