// Build-time: the signed measurement manifest of a release (appliance/contracts/measurement.ts).
// The image build (or bundle.sh) computes what the new slot's trees measure to, exactly as
// pks-measure will at boot (expected.ts / measure.ts over the staged rootfs), and signs it with
// the image signing key, the same key that signs the PCR 11 policy. The bundle carries it; the
// running slot's vault checks it against the key pinned inside its own measured tree and only
// then signs a gate record for the new slot (services/vault/vault-gate.ts, gate-authorise).
import { createPrivateKey, sign } from 'node:crypto';
import { measurementManifestText, parseMeasurementManifest, pcr15Replay, type MeasurementManifest } from '../../appliance/contracts/measurement.js';
import { pksError } from '../../appliance/errors.js';
import { measureTrees } from './measure.js';
import type { ExpectedPcrs } from './expected.js';

export interface ManifestInput {
  readonly release: string;
  readonly compatible: string;
  /** the trees in extend order (from measureTrees or an expected-pcrs.json) */
  readonly trees: readonly { name: string; digest: string }[];
}

export function signMeasurementManifest(i: ManifestInput, keyPem: string | Buffer): MeasurementManifest {
  const trees = i.trees.map((t) => ({ name: t.name, digest: t.digest }));
  const body = { version: 1 as const, compatible: i.compatible, release: i.release, pcr15: pcr15Replay(trees), trees };
  const sig = sign('sha256', measurementManifestText(body), createPrivateKey(keyPem)).toString('base64');
  // the same checks the box makes, so a build never ships a manifest the vault would refuse
  return parseMeasurementManifest({ ...body, sig });
}

/** From a staged rootfs (what expected.ts measures). */
export async function manifestFromRootfs(rootfs: string, release: string, compatible: string, keyPem: string | Buffer): Promise<MeasurementManifest> {
  return signMeasurementManifest({ release, compatible, trees: await measureTrees(rootfs) }, keyPem);
}

/** From the expected-pcrs.json the image build already wrote; its PCR 15 must be their replay. */
export function manifestFromExpected(e: ExpectedPcrs, release: string, compatible: string, keyPem: string | Buffer): MeasurementManifest {
  const m = signMeasurementManifest({ release, compatible, trees: e.measurements }, keyPem);
  if (e.pcrs['15'] !== m.pcr15) throw pksError('PKS_CONFIG_INVALID', 'expected-pcrs.json: PCR 15 is not the replay of its measurements');
  return m;
}
