// The network and time steps of `pksctl setup`: systemd-networkd files (the plant interface,
// static or DHCP, and a VLAN for the tester network) and a timesyncd drop-in, rendered from the
// checked answers only (every value already matched its pattern, so nothing can smuggle a new
// line or section in), written durably under --root, and then read back through systemd itself:
// `systemd-analyze cat-config --root` must show exactly our file at the path networkd or
// timesyncd reads, with nothing on stderr (systemd-analyze exits 0 on warnings).
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { writeFileDurably } from '../durable-file.js';
import { pksError } from '../errors.js';
import type { SetupAnswers } from './setup-answers.js';

const run = promisify(execFile);

export interface ConfigFile {
  /** path relative to the root, as systemd names it in cat-config (etc/systemd/...) */
  rel: string;
  /** cat-config's name for it (relative to /etc, /run, /usr/lib) */
  catName: string;
  text: string;
}

const ini = (sections: [string, [string, string][]][]): string => sections.map(([s, kv]) => `[${s}]\n${kv.map(([k, v]) => `${k}=${v}\n`).join('')}`).join('\n');

export function renderNetwork(n: SetupAnswers['network'], t: SetupAnswers['time']): ConfigFile[] {
  const plant: [string, string][] = [];
  if (n.mode === 'dhcp') plant.push(['DHCP', 'ipv4']);
  else {
    plant.push(['Address', n.address!]);
    if (n.gateway) plant.push(['Gateway', n.gateway]);
    for (const d of n.dns ?? []) plant.push(['DNS', d]);
  }
  // the box keeps its own time source list: no NTP servers from DHCP overriding the plant's
  plant.push(['LinkLocalAddressing', 'no'], ['IPv6AcceptRA', 'no']);
  const files: ConfigFile[] = [];
  const net = (name: string, text: string): ConfigFile => ({ rel: `etc/systemd/network/${name}`, catName: `systemd/network/${name}`, text });
  if (n.testerVlan) {
    plant.push(['VLAN', n.testerVlan.name!]);
    files.push(net('20-pks-tester.netdev', ini([['NetDev', [['Name', n.testerVlan.name!], ['Kind', 'vlan']]], ['VLAN', [['Id', String(n.testerVlan.id)]]]])));
    files.push(net('21-pks-tester.network', ini([['Match', [['Name', n.testerVlan.name!]]], ['Network', [['Address', n.testerVlan.address], ['LinkLocalAddressing', 'no'], ['IPv6AcceptRA', 'no']]]])));
  }
  files.unshift(net('10-pks-plant.network', ini([['Match', [['Name', n.interface]]], ['Network', plant]])));
  files.push({ rel: 'etc/systemd/timesyncd.conf.d/50-pks.conf', catName: 'systemd/timesyncd.conf', text: ini([['Time', [['NTP', t.ntp.join(' ')]]]]) });
  return files;
}

/** Writes the files (durably) and checks each through systemd-analyze cat-config. */
export async function writeNetwork(root: string, files: ConfigFile[]): Promise<string[]> {
  for (const f of files) {
    const abs = path.join(root, f.rel);
    mkdirSync(path.dirname(abs), { recursive: true, mode: 0o755 });
    writeFileDurably(abs, f.text, 0o644);
  }
  for (const f of files) await verifyFile(root, f);
  return files.map((f) => `/${f.rel}`);
}

async function verifyFile(root: string, f: ConfigFile): Promise<void> {
  let out: { stdout: string; stderr: string };
  try {
    out = await run('systemd-analyze', ['cat-config', `--root=${root}`, '--no-pager', f.catName], { timeout: 30_000 });
  } catch (e) {
    throw pksError('PKS_SETUP_STEP', `systemd-analyze cat-config ${f.catName}: ${String((e as { stderr?: string }).stderr ?? (e as Error).message).trim().slice(0, 300)}`);
  }
  if (out.stderr.trim()) throw pksError('PKS_SETUP_STEP', `systemd-analyze cat-config ${f.catName}: ${out.stderr.trim().slice(0, 300)}`);
  const abs = path.join(root, f.rel);
  // systemd prints "# <path>" before each file it reads: ours must be there, with our content
  const at = out.stdout.indexOf(`# ${abs}\n`);
  if (at < 0) throw pksError('PKS_SETUP_STEP', `systemd does not read ${abs} for ${f.catName} (shadowed by another file?)`);
  const body = out.stdout.slice(at + abs.length + 3).split(/\n# \//)[0]!;
  const norm = (s: string): string => s.split('\n').filter((l) => l.trim() && !l.startsWith('#')).join('\n');
  if (norm(body) !== norm(f.text)) throw pksError('PKS_SETUP_STEP', `systemd reads ${abs} other than it was written`);
}
