// The live application measurement (issue 12): what pks-measure writes (at boot and then on its
// re-measure timer, services/attest/measure.ts) and what the vault's gate reads
// (services/vault/gate-inputs.ts). A contract, because the vault must not import attest's code.
//
// The file lives at /run/pks/live-measurements.json, written by root only (pks-measure runs as
// root; /run/pks is root:pks-ipc 0750), so no PKS service user, and in particular none of the
// network-facing ones, can write or replace it: the vault refuses it unless root owns it and
// nobody else may write it or its directory.
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
