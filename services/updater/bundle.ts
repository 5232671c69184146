// What a bundle says about itself: RAUC's manifest (an INI file) and `rauc info`, which checks
// the signature against the keyring before it prints anything. The svn (security version) is
// our [meta.pks] svn; RAUC 1.8 carries [meta.*] sections but does not act on them.
import { execFile } from 'node:child_process';
import { pksError, type PksError } from '../../appliance/errors.js';
import { VERSION } from '../../appliance/contracts/update.js';

export interface BundleInfo {
  compatible: string;
  version: string;
  svn: number;
  build?: string;
}


/**
 * The bundle's `pks-release` file (KEY=value lines: VERSION, SVN, COMPATIBLE, BUILD). RAUC 1.8
 * re-writes manifest.raucm with only the keys it knows and drops [meta.pks], so the svn travels
 * as a file of the signed payload (covered by the signature in plain format, by the verity
 * root hash in verity format).
 */
export function parseRelease(text: string): BundleInfo {
  if (text.length > 4096) throw pksError('PKS_UPDATE_CORRUPT', 'pks-release is too large');
  const kv = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^([A-Z]{1,16})=([A-Za-z0-9._-]{0,64})$/.exec(line.trim());
    if (!m) throw pksError('PKS_UPDATE_CORRUPT', 'pks-release line is not KEY=value');
    kv.set(m[1]!, m[2]!);
  }
  const compatible = kv.get('COMPATIBLE') ?? '';
  const version = kv.get('VERSION') ?? '';
  const svnText = kv.get('SVN') ?? '';
  if (!compatible) throw pksError('PKS_UPDATE_CORRUPT', 'pks-release has no COMPATIBLE');
  if (!VERSION.test(version)) throw pksError('PKS_UPDATE_CORRUPT', 'pks-release VERSION is not MAJOR.MINOR.PATCH');
  if (!/^[1-9][0-9]{0,5}$/.test(svnText)) throw pksError('PKS_UPDATE_CORRUPT', 'pks-release has no SVN');
  const build = kv.get('BUILD');
  return { compatible, version, svn: Number(svnText), ...(build ? { build } : {}) };
}

/** Maps RAUC's words for a refused bundle onto our codes (rauc info, rauc install). */
export function raucError(text: string, fallback: 'PKS_UPDATE_INSTALL_FAILED' | 'PKS_UPDATE_CORRUPT' = 'PKS_UPDATE_INSTALL_FAILED'): PksError {
  // RAUC's info chatter ("rauc-Message: 09:10:30.141: Using ...") says nothing about the refusal
  const t = text
    .split('\n')
    .filter((l) => !/^\s*rauc-Message:|^\s*\d{1,3}% /.test(l))
    .join(' ')
    .replace(/\s+/g, ' ')
    .trim();
  const last = t.slice(-300);
  if (/PKS_UPDATE_DOWNGRADE/.test(t)) return pksError('PKS_UPDATE_DOWNGRADE', /PKS_UPDATE_DOWNGRADE: ([^\n]*?)(?:$| rauc)/.exec(t)?.[1]?.slice(0, 200) ?? 'below the version floor');
  if (/PKS_UPDATE_FLOOR/.test(t)) return pksError('PKS_UPDATE_FLOOR', 'version floor unreadable in the pre-install handler');
  if (/revoked/i.test(t)) return pksError('PKS_UPDATE_SIGNATURE', 'signing certificate is revoked');
  if (/compatible mismatch/i.test(t)) return pksError('PKS_UPDATE_INCOMPATIBLE', last);
  if (/signature|verify error|certificate|signer|CMS|keyring/i.test(t) && !/squashfs|size/i.test(t)) return pksError('PKS_UPDATE_SIGNATURE', last);
  if (/too small|truncat|size|squashfs|checksum|hash|invalid|magic|identifier|read|offset|format/i.test(t)) return pksError('PKS_UPDATE_CORRUPT', last);
  return pksError(fallback, last);
}

export interface RaucEnv {
  /** system.conf */
  conf: string;
  /** environment for rauc and its handlers (DBUS_SYSTEM_BUS_ADDRESS, TCTI, ESP) */
  env?: NodeJS.ProcessEnv;
}

export function runRauc(args: string[], r: RaucEnv, timeoutMs = 120_000): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('rauc', ['-c', r.conf, ...args], { env: { ...process.env, ...r.env }, timeout: timeoutMs, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(err, { stdout, stderr }));
      else resolve({ stdout, stderr });
    });
  });
}

/**
 * One file of the bundle's payload (call only after `rauc info` verified the copy the caller
 * holds); null when the bundle has no such file. Files are small: 64 KiB at most.
 */
export function bundleFile(file: string, name: string): Promise<string | null> {
  return new Promise((resolve) => {
    execFile('unsquashfs', ['-cat', file, name], { timeout: 30_000, maxBuffer: 64 * 1024 }, (err, stdout) => resolve(err ? null : stdout));
  });
}

/** `rauc info`: signature (keyring incl. CRL), then the manifest. Coded error on refusal. */
export async function inspectBundle(file: string, r: RaucEnv): Promise<BundleInfo> {
  let out;
  try {
    out = await runRauc(['info', '--output-format=json', file], r, 60_000);
  } catch (e) {
    throw raucError(`${(e as { stderr?: string }).stderr ?? ''} ${(e as { stdout?: string }).stdout ?? ''}`, 'PKS_UPDATE_CORRUPT');
  }
  let j: { compatible?: unknown; version?: unknown };
  try {
    j = JSON.parse(out.stdout) as typeof j;
  } catch {
    throw pksError('PKS_UPDATE_CORRUPT', 'rauc info answered no JSON');
  }
  // the svn is in pks-release inside the squashfs that rauc info has just verified; the
  // caller holds its own copy of the file, so it cannot change in between
  const text = await bundleFile(file, 'pks-release');
  if (text === null) throw pksError('PKS_UPDATE_CORRUPT', 'pks-release not readable from the bundle');
  const info = parseRelease(text);
  if (info.compatible !== String(j.compatible) || info.version !== String(j.version)) throw pksError('PKS_UPDATE_CORRUPT', 'manifest differs from what rauc verified');
  return info;
}
