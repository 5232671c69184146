// The live application measurement (issue 12): what pks-measure writes (at boot and then on its
// re-measure timer, services/attest/measure.ts) and what the vault's gate reads
// (services/vault/gate-inputs.ts). A contract, because the vault must not import attest's code.
//
// The file lives at /run/pks/live-measurements.json, written by root only (pks-measure runs as
// root; /run/pks is root:pks-ipc 0750), so no PKS service user, and in particular none of the
// network-facing ones, can write or replace it: the vault refuses it unless root owns it and
// nobody else may write it or its directory.
import { createHash } from 'node:crypto';
import { pksError } from '../errors.js';

export const LIVE_MEASUREMENT_PATH = '/run/pks/live-measurements.json';
/** How often pks-measure-live.timer re-measures (OnUnitActiveSec=) and how old a measurement the gate still takes. */
export const LIVE_MEASURE_EVERY_S = 60;
export const LIVE_MEASUREMENT_MAX_AGE_S = 300;

export interface LiveTree {
  readonly name: string;
  readonly digest: string;
}

export interface LiveMeasurement {
  readonly version: 1;
  readonly measuredAt: string;
  /** PCR 15 read back from the TPM at this measurement: what the boot extended */
  readonly pcr15: string;
  /** the trees hashed just now, in PCR 15's extend order */
  readonly trees: LiveTree[];
}

const HEX64 = /^[0-9a-f]{64}$/;

export function parseLiveMeasurement(raw: unknown): LiveMeasurement {
  const bad = (what: string): never => {
    throw pksError('PKS_TAMPERED', `live measurement: ${what}`);
  };
  const o = raw as Partial<LiveMeasurement>;
  if (typeof o !== 'object' || o === null || o.version !== 1) bad('wrong version');
  if (typeof o.measuredAt !== 'string' || !Number.isFinite(Date.parse(o.measuredAt))) bad('no time');
  if (typeof o.pcr15 !== 'string' || !HEX64.test(o.pcr15)) bad('no PCR 15');
  if (!Array.isArray(o.trees) || o.trees.length < 1 || o.trees.length > 8) bad('no trees');
  for (const t of o.trees!) if (typeof t?.name !== 'string' || !/^[a-z0-9-]{1,32}$/.test(t.name) || typeof t.digest !== 'string' || !HEX64.test(t.digest)) bad('malformed tree');
  return { version: 1, measuredAt: o.measuredAt!, pcr15: o.pcr15!, trees: o.trees!.map((t) => ({ name: t.name, digest: t.digest })) };
}

// ---- the signed measurement manifest (re-authorisation by update) ----------------------------
// What the build expects a new slot to measure to (services/attest/expected.ts over the staged
// rootfs), signed with the image signing key: the bundle carries it as `pks-measurement.json`,
// the updater hands it to the vault (`gate-authorise`), and the vault checks the signature itself
// against the key pinned inside the measured application tree, then builds and signs the gate
// record for the new slot. A contract because the build (attest), the updater and the vault all
// read it, and none imports another's folder.

/** The trees that setup provisions per site (the configuration), not the build. */
export const SITE_TREE_NAMES: readonly string[] = Object.freeze(['pks-config']);
/** Where the bundle keeps the manifest and where the vault finds the pinned key (inside pks-app). */
export const MEASUREMENT_MANIFEST_FILE = 'pks-measurement.json';
export const MEASUREMENT_SIGNING_KEY_PATH = '/usr/lib/pks/measurement-signing.pem';

export interface MeasurementManifest {
  readonly version: 1;
  readonly compatible: string;
  /** the release (bundle VERSION) this measurement belongs to */
  readonly release: string;
  /** PCR 15 after the trees, from its reset value */
  readonly pcr15: string;
  readonly trees: LiveTree[];
  /** base64 signature by the image signing key over measurementManifestText() */
  readonly sig: string;
}

export const measurementManifestText = (m: Omit<MeasurementManifest, 'sig'>): Buffer =>
  Buffer.from(`pks-measurement-manifest-v1|${m.compatible}|${m.release}|${m.pcr15}|${m.trees.map((t) => `${t.name}=${t.digest}`).join(',')}`);

/** PCR 15 from its reset value after extending each tree digest in order (what pks-measure does). */
export function pcr15Replay(trees: readonly LiveTree[]): string {
  let v = Buffer.alloc(32);
  for (const t of trees) v = createHash('sha256').update(v).update(Buffer.from(t.digest, 'hex')).digest();
  return v.toString('hex');
}

/** Structure only (the signature is the vault's to check); anything off is PKS_UPDATE_MEASUREMENT. */
export function parseMeasurementManifest(raw: unknown): MeasurementManifest {
  const bad = (what: string): never => {
    throw pksError('PKS_UPDATE_MEASUREMENT', `measurement manifest: ${what}`);
  };
  const o = raw as Partial<MeasurementManifest>;
  if (typeof o !== 'object' || o === null || o.version !== 1) bad('wrong version');
  if (typeof o.compatible !== 'string' || !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(o.compatible)) bad('no compatible');
  if (typeof o.release !== 'string' || !/^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}$/.test(o.release)) bad('release is not MAJOR.MINOR.PATCH');
  if (typeof o.pcr15 !== 'string' || !HEX64.test(o.pcr15)) bad('no PCR 15');
  if (!Array.isArray(o.trees) || o.trees.length < 1 || o.trees.length > 8) bad('no trees');
  for (const t of o.trees!) if (typeof t?.name !== 'string' || !/^[a-z0-9-]{1,32}$/.test(t.name) || typeof t.digest !== 'string' || !HEX64.test(t.digest)) bad('malformed tree');
  if (typeof o.sig !== 'string' || o.sig.length < 16 || o.sig.length > 2048 || !/^[A-Za-z0-9+/]+={0,2}$/.test(o.sig)) bad('no signature');
  if (pcr15Replay(o.trees!) !== o.pcr15) bad('PCR 15 is not the replay of its trees');
  return { version: 1, compatible: o.compatible!, release: o.release!, pcr15: o.pcr15!, trees: o.trees!.map((t) => ({ name: t.name, digest: t.digest })), sig: o.sig! };
}
