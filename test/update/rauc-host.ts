// RAUC for host tests: file-backed A/B root slots, a directory standing in for the ESP (the
// real bootchooser.sh and post-install.sh work on it), the real pre-install handler against a
// swtpm, a private D-Bus system bus (dbus-daemon with our own config) and `rauc service` on it,
// all in a temp dir, stopped by PID. boot() does what systemd-boot does at power-on: picks the
// entry (highest gen that still has tries) and counts a try down.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSwtpm, type Swtpm } from '../attest/swtpm.js';
import { defineFloor } from '../../services/updater/floor.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const hooks = path.join(repoRoot, 'rootfs-overlay/usr/lib/pks-update');

export interface RaucHost {
  dir: string;
  conf: string;
  keys: string;
  esp: string;
  slots: { A: string; B: string };
  tpm: Swtpm;
  env: NodeJS.ProcessEnv;
  reportDir: string;
  serviceLog: string;
  /** the slot the current "boot" runs */
  booted: 'A' | 'B';
  startService(): Promise<void>;
  stopService(signal?: NodeJS.Signals): Promise<void>;
  /** power-on: systemd-boot's choice and try count, then rauc service for that slot */
  boot(): Promise<'A' | 'B'>;
  entries(): string[];
  stop(): Promise<void>;
}

export function sh(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

/** The dev maintenance keys once per test process (keys.sh), in a temp dir. */
let keysDir: string | undefined;
export function devKeys(): string {
  if (keysDir) return keysDir;
  keysDir = mkdtempSync(path.join(os.tmpdir(), 'pks-update-keys-'));
  const r = sh(path.join(repoRoot, 'scripts/update/keys.sh'), ['--dir', keysDir, 'init']);
  if (r.code !== 0) throw new Error(`keys.sh: ${r.stderr}`);
  return keysDir;
}

export interface BundleOpts {
  version: string;
  svn: number;
  signer?: string;
  compatible?: string;
  /** size of the random rootfs payload */
  bytes?: number;
  out: string;
  keys?: string;
  /** written into the payload's first line (the fault tests' health command looks for it) */
  marker?: string;
  /** a signed measurement manifest (pks-measurement.json) for the payload */
  measurement?: string;
}

/** A plain-format bundle (host) with a random rootfs image whose first bytes name the version. */
export function makeBundle(o: BundleOpts): string {
  const img = `${o.out}.rootfs`;
  const body = Buffer.alloc(o.bytes ?? 512 * 1024);
  for (let i = 0; i < body.length; i += 4096) body.write(`pks-root ${o.version}${o.marker ? ` ${o.marker}` : ''}\n`, i);
  spawnSync('sh', ['-c', `head -c ${Math.floor(body.length / 2)} /dev/urandom >> "${img}.rnd"`]);
  writeFileSync(img, body);
  const args = ['--format', 'plain', '--version', o.version, '--svn', String(o.svn), '--keys', o.keys ?? devKeys(), '--rootfs', img, '--out', o.out];
  if (o.signer) args.push('--signer', o.signer);
  if (o.compatible) args.push('--compatible', o.compatible);
  if (o.measurement) args.push('--measurement', o.measurement);
  const r = sh(path.join(repoRoot, 'scripts/update/bundle.sh'), args);
  rmSync(img, { force: true });
  rmSync(`${img}.rnd`, { force: true });
  if (r.code !== 0) throw new Error(`bundle.sh: ${r.stderr}`);
  return o.out;
}

const BUS_CONF = (sock: string) => `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${sock}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`;

async function waitFor(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`${what} did not come up`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const gone = (c: ChildProcess) => new Promise<void>((r) => (c.exitCode !== null || c.signalCode !== null ? r() : c.once('exit', () => r())));

export async function startRaucHost(opts: { slotBytes?: number; keys?: string } = {}): Promise<RaucHost> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pks-rauc-'));
  const keys = opts.keys ?? devKeys();
  const esp = path.join(dir, 'esp');
  mkdirSync(path.join(esp, 'EFI/Linux'), { recursive: true });
  mkdirSync(path.join(esp, 'loader'), { recursive: true });
  writeFileSync(path.join(esp, 'loader/loader.conf'), 'default pks-*\ntimeout 0\n');
  // factory state: A blessed and booted, B never installed (no tries)
  writeFileSync(path.join(esp, 'EFI/Linux/pks-1-A.efi'), 'uki A factory\n');
  writeFileSync(path.join(esp, 'EFI/Linux/pks-0-B+0-3.efi'), 'uki B none\n');
  const slots = { A: path.join(dir, 'slot-a.img'), B: path.join(dir, 'slot-b.img') };
  for (const s of Object.values(slots)) writeFileSync(s, Buffer.alloc(opts.slotBytes ?? 2 << 20));
  const tpm = await startSwtpm();
  await defineFloor(tpm.tcti);
  // the handler runs our TypeScript through tsx here; on the box pre-install.sh runs dist/
  const pre = path.join(dir, 'pre-install');
  writeFileSync(pre, `#!/bin/sh\ncd ${repoRoot} && exec ${process.execPath} --import tsx ${path.join(repoRoot, 'services/updater/pre-install.ts')} 2>>${dir}/handler.log\n`, { mode: 0o755 });
  const conf = path.join(dir, 'system.conf');
  writeFileSync(
    conf,
    `# host test system.conf: like rootfs-overlay/etc/rauc/system.conf, but file slots and plain bundles
[system]
compatible=pks-appliance
bootloader=custom
mountprefix=${dir}/mnt
data-directory=${dir}/data
statusfile=${dir}/data/central.raucs

[keyring]
path=${keys}/keyring.pem
check-crl=true
check-purpose=codesign

[handlers]
bootloader-custom-backend=${hooks}/bootchooser.sh
pre-install=${pre}
post-install=${hooks}/post-install.sh

[slot.rootfs.0]
device=${slots.A}
type=raw
bootname=A

[slot.rootfs.1]
device=${slots.B}
type=raw
bootname=B
`,
  );
  mkdirSync(path.join(dir, 'mnt'));
  mkdirSync(path.join(dir, 'data'));
  const busSock = path.join(dir, 'bus');
  writeFileSync(path.join(dir, 'bus.conf'), BUS_CONF(busSock));
  const bus = spawn('dbus-daemon', ['--config-file', path.join(dir, 'bus.conf'), '--nofork', '--nopidfile'], { stdio: 'ignore' });
  await waitFor('dbus-daemon', () => existsSync(busSock));
  const env: NodeJS.ProcessEnv = {
    DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${busSock}`,
    PKS_ESP: esp,
    TPM2TOOLS_TCTI: tpm.tcti,
    PKS_UPDATE_REPORT_DIR: path.join(dir, 'report'),
  };
  mkdirSync(path.join(dir, 'report'));
  let service: ChildProcess | null = null;
  let serviceLog = '';
  const host: RaucHost = {
    dir,
    conf,
    keys,
    esp,
    slots,
    tpm,
    env,
    reportDir: path.join(dir, 'report'),
    get serviceLog() {
      return serviceLog;
    },
    booted: 'A',
    async startService() {
      if (service) return;
      serviceLog = '';
      const child = spawn('rauc', ['-c', conf, 'service', `--override-boot-slot=${host.booted}`, `--mount=${dir}/mnt`], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout!.on('data', (d: Buffer) => (serviceLog += d.toString()));
      child.stderr!.on('data', (d: Buffer) => (serviceLog += d.toString()));
      service = child;
      await waitFor('rauc service', () => sh('rauc', ['-c', conf, 'status', '--output-format=json'], env).code === 0 || child.exitCode !== null);
      if (child.exitCode !== null) throw new Error(`rauc service exited: ${serviceLog}`);
    },
    async stopService(signal = 'SIGTERM') {
      const s = service;
      service = null;
      if (s && s.exitCode === null && s.pid) {
        const g = gone(s);
        process.kill(s.pid, signal);
        await g;
      }
      // a killed service may leave its bundle mounted
      for (const m of readdirSync(path.join(dir, 'mnt'))) sh('umount', ['-l', path.join(dir, 'mnt', m)]);
    },
    async boot() {
      await host.stopService();
      const files = host.entries();
      const parse = (f: string) => /^pks-(\d+)-([AB])(?:\+(\d+)(?:-(\d+))?)?\.efi$/.exec(f);
      const usable = files.map(parse).filter((m): m is RegExpExecArray => !!m && m[3] !== '0');
      usable.sort((a, b) => Number(b[1]) - Number(a[1]));
      const pick = usable[0];
      if (!pick) throw new Error(`no bootable entry in ${files.join(' ')}`);
      if (pick[3] !== undefined) {
        const left = Number(pick[3]) - 1;
        const done = Number(pick[4] ?? 0) + 1;
        renameSync(path.join(esp, 'EFI/Linux', pick[0]), path.join(esp, 'EFI/Linux', `pks-${pick[1]}-${pick[2]}+${left}-${done}.efi`));
      }
      host.booted = pick[2] as 'A' | 'B';
      await host.startService();
      return host.booted;
    },
    entries: () => readdirSync(path.join(esp, 'EFI/Linux')).sort(),
    async stop() {
      await host.stopService();
      if (bus.exitCode === null && bus.pid) {
        const g = gone(bus);
        process.kill(bus.pid, 'SIGTERM');
        await g;
      }
      await tpm.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await host.startService();
  return host;
}
