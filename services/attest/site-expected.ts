// The provisioning record of the configuration measurement. The image build can only expect
// the configuration tree (/etc/pks) as the image ships it, before any site setup; plant IT's
// one-time setup (rootfs-overlay/usr/lib/pks-setup/setup.sh) writes the site configuration and
// then records here what that tree measures to. `pksctl status` expects PCR 15 to be the
// image's application measurement followed by this recorded configuration measurement, so:
//   - a change to /usr/lib/pks is still judged against the image (the build's expectation);
//   - a change to /etc/pks after setup shows as "pks-config differs" until setup is re-run;
//   - a box without the record is judged against the image's unprovisioned config.
// The record lives outside the measured trees (recording it cannot change what it records) and
// is root's: trust on provisioning. A production box would seal it to the boot-chain PCRs or
// have the vault sign it; here it is a root-only file under /var/lib/pks.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import { treeManifest } from './manifest.js';
import { MEASURED_TREES, type TreeMeasurement } from './measure.js';
import { parseDigestHex, sha256 } from './pcr.js';

export const SITE_EXPECTED_PATH = '/var/lib/pks/attest/config-expected.json';
/** The trees provisioning may change: the configuration, never the application. */
export const SITE_TREES = Object.freeze(['pks-config'] as const);

export interface SiteExpected {
  readonly version: 1;
  readonly recordedAt: string;
  readonly measurements: TreeMeasurement[];
}

/** Measures the site trees under `rootfs` exactly as measure.ts does at boot. */
export async function measureSiteTrees(rootfs = '/'): Promise<TreeMeasurement[]> {
  const out: TreeMeasurement[] = [];
  for (const t of MEASURED_TREES) {
    if (!(SITE_TREES as readonly string[]).includes(t.name)) continue;
    const m = await treeManifest(path.join(rootfs, t.path), t.exclude);
    out.push({ name: t.name, path: t.path, digest: sha256(`${t.name}\n`, m.text).toString('hex'), files: m.files, bytes: m.bytes });
  }
  return out;
}

export async function recordSiteExpected(o: { out?: string; rootfs?: string; now?: Date } = {}): Promise<SiteExpected> {
  const rec: SiteExpected = { version: 1, recordedAt: (o.now ?? new Date()).toISOString(), measurements: await measureSiteTrees(o.rootfs) };
  const out = o.out ?? SITE_EXPECTED_PATH;
  await mkdir(path.dirname(out), { recursive: true, mode: 0o755 });
  await writeFile(`${out}.tmp`, JSON.stringify(rec, null, 2) + '\n', { mode: 0o644 });
  await rename(`${out}.tmp`, out);
  return rec;
}

/** Reads the record; undefined when the box was never provisioned (no file). */
export async function readSiteExpected(p = SITE_EXPECTED_PATH): Promise<SiteExpected | undefined> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(p, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw pksError('PKS_CONFIG_INVALID', `${p} is not JSON`, e);
  }
  const o = raw as Partial<SiteExpected>;
  const bad = (what: string): never => {
    throw pksError('PKS_CONFIG_INVALID', `provisioning record: ${what}`);
  };
  if (typeof o !== 'object' || o === null || o.version !== 1 || typeof o.recordedAt !== 'string') bad('wrong version');
  if (!Array.isArray(o.measurements) || o.measurements.length > SITE_TREES.length) bad('measurements missing');
  for (const m of o.measurements!) {
    if (typeof m?.name !== 'string' || !(SITE_TREES as readonly string[]).includes(m.name) || typeof m.digest !== 'string') bad('malformed measurement');
    parseDigestHex(m.digest);
  }
  return o as SiteExpected;
}

/**
 * The measurements PCR 15 should carry: the image's, with the site trees replaced by the
 * provisioning record's. Order stays MEASURED_TREES' (the extend order).
 */
export function effectiveMeasurements(image: readonly TreeMeasurement[], site: SiteExpected | undefined): TreeMeasurement[] {
  if (!site) return [...image];
  return image.map((m) => site.measurements.find((s) => s.name === m.name) ?? m);
}
