// The appliance's systemd units and the files around them (rootfs-overlay/), checked with
// systemd's own tools: `systemd-analyze security --offline` exposure limits, `systemd-analyze
// verify` with any warning as a failure, sysusers/tmpfiles/presets applied to a temp root,
// sysctl keys, the nftables ruleset in a private network namespace, and the vault's
// `node --jitless` under a write-xor-execute memory policy.
import { execFile, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { unitNodeFlags } from '../../scripts/plant/process.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const overlay = path.join(repoRoot, 'rootfs-overlay');
const unitDir = path.join(overlay, 'usr/lib/systemd/system');

const SERVICES = ['vault', 'keystore', 'tester-api', 'uplink', 'sentinel', 'unlock', 'updater'] as const;
const NETWORK_FACING = new Set<string>(['tester-api', 'uplink', 'sentinel', 'unlock', 'updater']);
// Servers and the callers each has a socket for: /run/pks/<server>/<caller>.sock, group
// pks-<server>-<caller> (sysusers.d/pks.conf).
const SOCKET_PAIRS: Record<string, readonly string[]> = {
  vault: ['keystore', 'tester-api', 'uplink', 'sentinel', 'unlock', 'updater'],
  keystore: ['tester-api', 'uplink', 'sentinel', 'unlock', 'updater'],
  'tester-api': ['sentinel'],
  uplink: ['sentinel', 'updater'],
  unlock: ['uplink'],
  updater: ['uplink'],
};

// ---- a minimal unit-file reader -------------------------------------------------------------

/** section -> key -> every assignment in file order (systemd keys may repeat). */
type UnitFile = Map<string, Map<string, string[]>>;

function readUnit(file: string): UnitFile {
  const unit: UnitFile = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf('=');
    if (!section || eq < 0) throw new Error(`${file}: cannot parse line: ${line}`);
    const key = line.slice(0, eq).trim();
    const list = section.get(key) ?? [];
    list.push(line.slice(eq + 1).trim());
    section.set(key, list);
  }
  return unit;
}

/** Every word assigned to a list-valued key; an empty assignment resets it, as in systemd. */
function words(unit: UnitFile, section: string, key: string): string[] {
  const out: string[] = [];
  for (const v of unit.get(section)?.get(key) ?? []) {
    if (v === '') out.length = 0;
    else out.push(...v.split(/\s+/));
  }
  return out;
}

/** The effective value of a single-valued key (the last assignment). */
function last(unit: UnitFile, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

// ---- running tools --------------------------------------------------------------------------

function have(cmd: string, args: string[] = ['--version']): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: 15_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

const isRoot = process.getuid?.() === 0;
const hasAnalyze = have('systemd-analyze');
if (!hasAnalyze) {
  console.log('SKIP units: systemd-analyze is missing (Debian package "systemd"); unit files are only read, not verified');
}
const withSystemd = hasAnalyze ? test : test.skip;

const unitPath = (name: string): string => path.join(unitDir, `pks-${name}.service`);
const units = new Map(SERVICES.map((s) => [s, readUnit(unitPath(s))]));
const unitOf = (name: string): UnitFile => units.get(name as (typeof SERVICES)[number])!;

let tmpRoot = '';
test.before(() => {
  tmpRoot = mkdtempSync(path.join(os.tmpdir(), 'pks-units-'));
});
test.after(() => {
  if (tmpRoot) rmSync(tmpRoot, { recursive: true, force: true });
});

// ---- the unit files themselves --------------------------------------------------------------

// pks-measure.service is the boot-time oneshot of the image (measured boot), checked by the image tests;
// pks-measure-live.{service,timer} re-measure while the box runs (the vault's gate follows them)
// pks-update-reboot.{path,service} turn the updater's reboot request into a reboot (root, no daemon)
// pks-quote.{socket,@.service}: the TPM quotes for the uplink, which has no TPM device itself
test('the unit directory holds exactly the PKS services, the measurement and unseal oneshots, the update reboot pair, the quote socket and pks.target', () => {
  const found = readdirSync(unitDir).filter((f) => f.startsWith('pks')).sort();
  const want = [
    ...SERVICES.map((s) => `pks-${s}.service`),
    ...['pks-measure.service', 'pks-measure-live.service', 'pks-measure-live.timer', 'pks-unseal.service', 'pks-update-reboot.path', 'pks-update-reboot.service', 'pks-quote.socket', 'pks-quote@.service', 'pks.target'],
  ].sort();
  assert.equal(found, want);
});

test('pks-quote: only the uplink reaches the TPM quotes; one request per instance, no capability, only /dev/tpmrm0, no network', () => {
  const sock = readUnit(path.join(unitDir, 'pks-quote.socket'));
  const svc = readUnit(path.join(unitDir, 'pks-quote@.service'));
  assert.equal(['Accept', 'SocketGroup', 'SocketMode', 'ListenStream'].map((k) => last(sock, 'Socket', k)), ['yes', 'pks-uplink', '0660', '/run/pks/quote.sock']);
  assert.equal(['StandardInput', 'StandardOutput', 'CapabilityBoundingSet', 'DeviceAllow', 'DevicePolicy', 'PrivateNetwork', 'NoNewPrivileges'].map((k) => last(svc, 'Service', k)), ['socket', 'socket', '', '/dev/tpmrm0 rw', 'closed', 'yes', 'yes']);
  // the uplink itself keeps no device access and no TPM group
  const uplink = unitOf('uplink');
  assert.is(last(uplink, 'Service', 'PrivateDevices'), 'yes');
  assert.not.ok(words(uplink, 'Service', 'SupplementaryGroups').includes('tss'));
});

for (const name of SERVICES) {
  test(`pks-${name}.service: notify + watchdog, own user, state/runtime dirs, config, core hardening`, () => {
    const u = unitOf(name);
    const svc = (k: string): string | undefined => last(u, 'Service', k);
    assert.is(svc('Type'), 'notify');
    assert.is(svc('NotifyAccess'), 'main');
    assert.match(svc('WatchdogSec') ?? '', /^[1-9]\d*s$/, 'WatchdogSec in whole seconds');
    assert.ok(['on-failure', 'always'].includes(svc('Restart') ?? ''), 'Restart=on-failure|always');
    assert.ok(svc('RestartSec'), 'RestartSec set');
    assert.is(svc('User'), `pks-${name}`);
    assert.is(svc('Group'), `pks-${name}`);
    assert.is(svc('DynamicUser'), undefined);
    assert.ok(words(u, 'Service', 'SupplementaryGroups').includes('pks-ipc'), 'member of pks-ipc');
    assert.is(svc('StateDirectory'), `pks/${name}`);
    assert.is(svc('StateDirectoryMode'), '0700');
    assert.is(svc('RuntimeDirectory'), `pks/${name}`);
    assert.is(svc('RuntimeDirectoryMode'), '0711');
    assert.is(svc('UMask'), '0077');
    const exec = (svc('ExecStart') ?? '').split(/\s+/);
    assert.is(exec[0], '/usr/bin/node');
    assert.is(exec.at(-1), `/usr/lib/pks/dist/services/${name}/main.js`);
    // the memory budget of all services together (README: the benchmarks) counts on it
    assert.ok(exec.includes('--max-semi-space-size=2'), 'young generation capped at 2 MB');
    // the bench and the campaigns start a service from dist/ with exactly these flags
    assert.equal(unitNodeFlags(name), exec.slice(1, -1), 'scripts/plant reads the same node flags');
    assert.ok(words(u, 'Service', 'Environment').includes(`PKS_CONFIG=/etc/pks/${name}.json`), 'PKS_CONFIG');
    assert.equal(words(u, 'Service', 'CapabilityBoundingSet'), [], 'no capabilities');
    assert.equal(words(u, 'Service', 'AmbientCapabilities'), [], 'no ambient capabilities');
    for (const [k, v] of [
      ['NoNewPrivileges', 'yes'], ['ProtectSystem', 'strict'], ['ProtectHome', 'yes'], ['PrivateTmp', 'yes'],
      ['PrivateDevices', 'yes'], ['DevicePolicy', 'closed'], ['ProtectProc', 'invisible'], ['ProcSubset', 'pid'],
      ['ProtectKernelTunables', 'yes'], ['ProtectKernelModules', 'yes'], ['ProtectKernelLogs', 'yes'],
      ['ProtectControlGroups', 'yes'], ['ProtectClock', 'yes'], ['ProtectHostname', 'yes'],
      ['RestrictNamespaces', 'yes'], ['RestrictRealtime', 'yes'], ['RestrictSUIDSGID', 'yes'],
      ['LockPersonality', 'yes'], ['RemoveIPC', 'yes'], ['KeyringMode', 'private'], ['SystemCallArchitectures', 'native'],
    ] as const) {
      assert.is(svc(k), v, `${k}=${v}`);
    }
    const filter = words(u, 'Service', 'SystemCallFilter');
    assert.ok(filter.includes('@system-service') && filter.includes('~@privileged') && filter.includes('@resources'), 'SystemCallFilter');
    // V8's JIT aborts under MemoryDenyWriteExecute=yes: the two must go together.
    const mdwe = svc('MemoryDenyWriteExecute');
    assert.ok(mdwe === 'yes' || mdwe === 'no', 'MemoryDenyWriteExecute set explicitly');
    assert.is(exec.includes('--jitless'), mdwe === 'yes', 'MemoryDenyWriteExecute=yes exactly when node runs --jitless');
    assert.equal(words(u, 'Unit', 'PartOf'), ['pks.target']);
    assert.equal(words(u, 'Install', 'WantedBy'), ['pks.target']);
    const families = words(u, 'Service', 'RestrictAddressFamilies');
    if (NETWORK_FACING.has(name)) assert.equal(families, ['AF_UNIX', 'AF_INET', 'AF_INET6']);
    else assert.equal(families, ['AF_UNIX']);
  });
}

// Issue 9, item 6: a service that fails at start (full disk, HSM or broker missing) must keep
// being retried; StartLimitBurst within StartLimitIntervalSec would leave it failed for good.
for (const name of SERVICES) {
  test(`pks-${name}.service: no start limit, restarts forever at a bounded interval`, () => {
    const u = unitOf(name);
    assert.is(last(u, 'Unit', 'StartLimitIntervalSec'), '0', 'StartLimitIntervalSec=0 (no start rate limit)');
    assert.is(last(u, 'Unit', 'StartLimitBurst'), undefined, 'no StartLimitBurst');
    assert.is(last(u, 'Service', 'StartLimitAction'), undefined);
    assert.ok(['on-failure', 'always'].includes(last(u, 'Service', 'Restart') ?? ''), 'Restart=on-failure|always');
    const sec = /^(\d+)s$/.exec(last(u, 'Service', 'RestartSec') ?? '');
    assert.ok(sec && Number(sec[1]) >= 1 && Number(sec[1]) <= 30, 'RestartSec between 1 s and 30 s');
  });
}

test('pks-vault.service: no network at all, HSM PIN as a credential, no W+X memory', () => {
  const u = unitOf('vault');
  assert.is(last(u, 'Service', 'PrivateNetwork'), 'yes');
  assert.equal(words(u, 'Service', 'RestrictAddressFamilies'), ['AF_UNIX']);
  assert.is(last(u, 'Service', 'IPAddressDeny'), 'any');
  assert.ok(words(u, 'Service', 'LoadCredential').includes('hsm-pin:/run/credstore/hsm-pin'), 'the PIN from the TPM unseal (tmpfs), never from the disk');
  assert.is(last(u, 'Service', 'MemoryDenyWriteExecute'), 'yes');
  assert.is(words(u, 'Service', 'Environment').some((e) => /PIN/i.test(e)), false, 'no PIN in the environment');
});

test('pks-keystore.service: no IP traffic', () => {
  const u = unitOf('keystore');
  assert.is(last(u, 'Service', 'IPAddressDeny'), 'any');
  assert.is(last(u, 'Service', 'PrivateNetwork'), 'yes');
});

// ---- systemd-analyze ------------------------------------------------------------------------

const exposures = new Map<string, number>();
for (const name of SERVICES) {
  const limit = NETWORK_FACING.has(name) ? 1.5 : 1.0;
  withSystemd(`pks-${name}.service: systemd-analyze security --offline exposure <= ${limit}`, async () => {
    const r = await run('systemd-analyze', ['security', '--offline=true', '--no-pager', unitPath(name)]);
    assert.is(r.stderr, '', `systemd-analyze security complained:\n${r.stderr}`);
    assert.is(r.code, 0);
    const m = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(r.stdout);
    assert.ok(m, `no overall exposure in:\n${r.stdout}`);
    const exposure = Number(m![1]);
    exposures.set(`pks-${name}.service`, exposure);
    assert.ok(exposure <= limit, `exposure ${exposure} > ${limit}:\n${r.stdout}`);
  });
}
withSystemd('exposure summary', () => {
  console.log(`exposure: ${[...exposures].map(([u, e]) => `${u} ${e.toFixed(1)}`).join(', ')}`);
});

withSystemd('systemd-analyze verify: every unit loads without a single warning', async () => {
  const files = readdirSync(unitDir).filter((f) => f.startsWith('pks')).map((f) => path.join(unitDir, f));
  // verify exits 0 on warnings (unknown keys, bad values, missing executables): stderr decides.
  const r = await run('systemd-analyze', ['verify', '--man=no', '--generators=no', ...files]);
  assert.is(r.stderr, '', `systemd-analyze verify:\n${r.stderr}`);
  assert.is(r.code, 0);
});

// ---- sysusers, tmpfiles, presets applied to a temp root -------------------------------------

interface Group { gid: number; members: string[] }

function readGroups(root: string): Map<string, Group> {
  const groups = new Map<string, Group>();
  for (const line of readFileSync(path.join(root, 'etc/group'), 'utf8').split('\n')) {
    const [name, , gid, members] = line.split(':');
    if (!name || gid === undefined) continue;
    groups.set(name, { gid: Number(gid), members: members ? members.split(',') : [] });
  }
  return groups;
}

withSystemd('sysusers.d: every user and group the units name exists; socket pair groups hold exactly server + caller', async () => {
  mkdirSync(path.join(tmpRoot, 'etc'), { recursive: true });
  const r = await run('systemd-sysusers', [`--root=${tmpRoot}`, path.join(overlay, 'usr/lib/sysusers.d/pks.conf')]);
  const noise = r.stderr.split('\n').filter((l) => l !== '' && !/^Creating (user|group) /.test(l));
  assert.equal(noise, [], 'systemd-sysusers warned');
  assert.is(r.code, 0);
  const users = new Map(
    readFileSync(path.join(tmpRoot, 'etc/passwd'), 'utf8').split('\n').filter(Boolean).map((l) => {
      const f = l.split(':');
      return [f[0]!, { gid: Number(f[3]), shell: f[6] }] as const;
    }),
  );
  const groups = readGroups(tmpRoot);
  for (const name of SERVICES) {
    const u = unitOf(name);
    const user = users.get(last(u, 'Service', 'User')!);
    assert.ok(user, `user pks-${name}`);
    assert.is(user!.shell, '/usr/sbin/nologin');
    assert.is(groups.get(last(u, 'Service', 'Group')!)?.gid, user!.gid, `primary group of pks-${name}`);
    for (const g of words(u, 'Service', 'SupplementaryGroups')) assert.ok(groups.has(g), `group ${g}`);
  }
  const expected = new Map<string, string[]>();
  for (const [server, callers] of Object.entries(SOCKET_PAIRS)) {
    for (const caller of callers) expected.set(`pks-${server}-${caller}`, [`pks-${caller}`, `pks-${server}`].sort());
  }
  for (const [name, g] of groups) {
    if (expected.has(name)) assert.equal([...g.members].sort(), expected.get(name), `members of ${name}`);
    else assert.equal(g.members, [], `${name} has no members`);
  }
  for (const name of expected.keys()) assert.ok(groups.has(name), `group ${name}`);
});

withSystemd('tmpfiles.d: /run/pks is root:pks-ipc 0750, /var/lib/pks 0711, credentials 0700', async () => {
  if (!isRoot) {
    console.log('SKIP tmpfiles ownership: needs root to chown inside the temp root');
    return;
  }
  // Users come from the previous test's sysusers run in the same temp root.
  const r = await run('systemd-tmpfiles', [`--root=${tmpRoot}`, '--create', path.join(overlay, 'usr/lib/tmpfiles.d/pks.conf')]);
  assert.is(r.stderr, '', `systemd-tmpfiles:\n${r.stderr}`);
  assert.is(r.code, 0);
  const ipc = readGroups(tmpRoot).get('pks-ipc')!.gid;
  const mode = (p: string) => {
    const st = statSync(path.join(tmpRoot, p));
    return { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid };
  };
  assert.equal(mode('run/pks'), { mode: '750', uid: 0, gid: ipc });
  assert.equal(mode('var/lib/pks'), { mode: '711', uid: 0, gid: 0 });
  assert.equal(mode('etc/pks/credentials'), { mode: '700', uid: 0, gid: 0 });
});

withSystemd('preset: preset-all enables pks.target from multi-user.target and every service from pks.target', async () => {
  const sys = path.join(tmpRoot, 'usr/lib/systemd/system');
  mkdirSync(path.join(tmpRoot, 'usr/lib/systemd'), { recursive: true });
  cpSync(unitDir, sys, { recursive: true });
  cpSync(path.join(overlay, 'usr/lib/systemd/system-preset'), path.join(tmpRoot, 'usr/lib/systemd/system-preset'), { recursive: true });
  // A stand-in for the base system's target so systemctl has something to hang pks.target on.
  writeFileSync(path.join(sys, 'multi-user.target'), '[Unit]\nDescription=Multi-User System\n');
  const r = await run('systemctl', [`--root=${tmpRoot}`, 'preset-all']);
  const noise = r.stderr.split('\n').filter((l) => l !== '' && !/^Created symlink /.test(l));
  assert.equal(noise, [], 'systemctl preset-all warned');
  assert.is(r.code, 0);
  const etc = path.join(tmpRoot, 'etc/systemd/system');
  assert.is(readlinkSync(path.join(etc, 'multi-user.target.wants/pks.target')), '/usr/lib/systemd/system/pks.target');
  for (const name of SERVICES) {
    const link = path.join(etc, 'pks.target.wants', `pks-${name}.service`);
    assert.is(readlinkSync(link), `/usr/lib/systemd/system/pks-${name}.service`);
  }
});

// ---- sysctl and nftables --------------------------------------------------------------------

test('sysctl.d: well-formed, and every key not marked optional ("-") exists in this kernel', () => {
  const file = path.join(overlay, 'usr/lib/sysctl.d/90-pks.conf');
  const seen = new Set<string>();
  for (const raw of readFileSync(file, 'utf8').split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^(-?)([a-z0-9_.]+)\s*=\s*(-?\d+)$/.exec(line);
    assert.ok(m, `bad sysctl line: ${line}`);
    const [, optional, key] = m!;
    assert.not.ok(seen.has(key!), `duplicate ${key}`);
    seen.add(key!);
    if (!optional) assert.ok(existsSync(path.join('/proc/sys', ...key!.split('.'))), `${key} unknown to this kernel; prefix it with "-" if it depends on a kernel option`);
  }
  for (const must of ['kernel.kptr_restrict', 'kernel.dmesg_restrict', 'kernel.unprivileged_bpf_disabled']) assert.ok(seen.has(must), must);
});

const canNft = isRoot && have('nft', ['--version']) && have('unshare', ['--version']);
if (!canNft) console.log('SKIP nftables: needs root, nft (Debian package "nftables") and unshare');
(canNft ? test : test.skip)('nftables: pks.nft loads (twice) in a private netns; drop policies, 8443 in, 8883 out', async () => {
  const nft = path.join(overlay, 'etc/nftables.d/pks.nft');
  // A fresh network namespace: the host's firewall is never touched.
  const r = await run('unshare', ['-n', 'sh', '-c', 'nft -f "$1" && nft -f "$1" && nft list table inet pks', 'sh', nft]);
  assert.is(r.stderr, '', `nft:\n${r.stderr}`);
  assert.is(r.code, 0);
  const chain = (name: string) => r.stdout.split(/\n\s*chain /).find((c) => c.startsWith(`${name} {`)) ?? '';
  for (const name of ['input', 'forward', 'output']) assert.match(chain(name), /policy drop;/, `${name} policy drop`);
  assert.match(chain('input'), /tcp dport 8443 accept/);
  assert.match(chain('input'), /tcp dport 9443 accept/);
  assert.not.match(chain('input'), /^\s*tcp dport 22 accept/m, 'ssh stays off by default');
  assert.match(chain('output'), /tcp dport 8883 accept/);
});

// ---- the vault's node --jitless under W^X ---------------------------------------------------

// systemd implements MemoryDenyWriteExecute= with seccomp (refusing mmap W+X and mprotect +X);
// Linux >= 6.3 has the same policy as prctl(PR_SET_MDWE), which is easy to set from a launcher.
// Sets it, then execs node as the vault unit does and loads what the vault uses.
const MDWE_LAUNCHER = `
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
`;
const VAULT_PROBE = `
const { createRequire } = require('node:module');
const req = createRequire(process.argv[1]);
const app = req('fastify')({ logger: false });
app.post('/x', { schema: { body: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] } } }, async (r) => ({ b: r.body.a + '!' }));
let sum = 0; for (let i = 0; i < 2e5; i++) sum += i;  // hot enough for the JIT to kick in
(async () => {
  const res = await app.inject({ method: 'POST', url: '/x', payload: { a: 'hi' } });
  let hsm = 'absent';
  if (require('node:fs').existsSync('/usr/lib/softhsm/libsofthsm2.so')) {
    const p = new (req('pkcs11js').PKCS11)();
    p.load('/usr/lib/softhsm/libsofthsm2.so'); p.C_Initialize(); hsm = p.C_GetInfo().libraryDescription.trim(); p.C_Finalize();
  }
  console.log(JSON.stringify({ body: res.json(), hsm, sum }));
})().catch((e) => { console.error(e); process.exit(1); });
`;
const hasPython = have('python3');
if (!hasPython) console.log('SKIP jitless: python3 missing (used to set PR_SET_MDWE)');
(hasPython ? test : test.skip)('vault: node with the unit\'s flags runs fastify + pkcs11js under W^X; the JIT does not', async () => {
  const exec = (last(unitOf('vault'), 'Service', 'ExecStart') ?? '').split(/\s+/);
  const nodeFlags = exec.slice(1, -1);
  assert.ok(nodeFlags.includes('--jitless'));
  const dir = mkdtempSync(path.join(tmpRoot, 'mdwe-'));
  const launcher = path.join(dir, 'mdwe.py');
  writeFileSync(launcher, MDWE_LAUNCHER);
  mkdirSync(path.join(dir, 'tokens'));
  writeFileSync(path.join(dir, 'softhsm2.conf'), `directories.tokendir = ${dir}/tokens\nobjectstore.backend = file\n`);
  const env = { ...process.env, SOFTHSM2_CONF: path.join(dir, 'softhsm2.conf'), NODE_OPTIONS: '' };
  const anchor = path.join(repoRoot, 'package.json'); // resolves the repo's node_modules
  const jitless = await run('python3', [launcher, process.execPath, ...nodeFlags, '-e', VAULT_PROBE, anchor], env);
  if (jitless.code === 77) {
    console.log('SKIP jitless: kernel has no PR_SET_MDWE (Linux < 6.3)');
    return;
  }
  assert.is(jitless.code, 0, `node ${nodeFlags.join(' ')} failed under W^X:\n${jitless.stderr}`);
  const out = JSON.parse(jitless.stdout.trim().split('\n').at(-1)!) as { body: unknown; hsm: string };
  assert.equal(out.body, { b: 'hi!' });
  assert.not.equal(out.hsm, '');
  // The control: the same probe with the JIT dies, so the policy was really in force.
  const jit = await run('python3', [launcher, process.execPath, '-e', VAULT_PROBE, anchor], env);
  assert.is.not(jit.code, 0, 'node with its JIT survived W^X: the policy was not applied');
});

test.run();
