// What the updater, its RAUC handlers, setup (a-image, issue 12) and the tools agree on.
//
// The version floor. A TPM 2.0 NV index of type counter (TPM_NT_COUNTER, nt=1), 8 bytes, at
// VERSION_FLOOR_NV_INDEX in the owner range, defined once at setup with
//   tpm2_nvdefine 0x01500016 -C o -s 8 -a "nt=1|ownerread|ownerwrite|authread|authwrite|no_da"
// and incremented once right after (a counter that was never incremented cannot be read). Its
// value is the lowest security version (svn, the bundle's [meta.pks] svn) the box installs.
// A counter only grows (TPM2_NV_Increment, +1 per call) and survives a disk swap, a reflash
// and a rollback of the data partition. The updater raises it to the booted bundle's svn only
// after that slot was marked good, so a failed update never locks the box out of its old slot.
// The svn is a small integer separate from the display version: a counter moves by one per
// increment, so svn steps are capped (MAX_SVN_STEP).
export const VERSION_FLOOR_NV_INDEX = 0x01500016;
export const VERSION_FLOOR_NV_ATTRIBUTES = 'nt=1|ownerread|ownerwrite|authread|authwrite|no_da';
export const MAX_SVN_STEP = 64;

/** RAUC [system] compatible of the appliance; a bundle for anything else is refused by RAUC. */
export const COMPATIBLE = 'pks-appliance';

/** The updater's phases, persisted in its state file on the data partition. */
export const UPDATE_PHASES = [
  'idle', // nothing going on (last result in `last`)
  'downloading', // fetching a bundle announced by a manifest (resumable)
  'downloaded', // verified against the manifest, waiting for the maintenance window
  'draining', // tester API stops new reservations, open ones are confirmed or time out
  'installing', // rauc install into the other slot
  'rebooting', // installed, the new slot is primary with boot tries, reboot asked
  'checking', // booted the new slot: health check before mark-good
] as const;
export type UpdatePhase = (typeof UPDATE_PHASES)[number];

export interface UpdateResult {
  ok: boolean;
  version: string;
  /** PKS error code of a failed update (PKS_UPDATE_*), absent when ok */
  code?: string;
  detail?: string;
  at: string;
  /** the slot the box runs after this update attempt */
  slot: string;
}

export interface UpdateStatus {
  phase: UpdatePhase;
  /** 0..100 within the phase */
  progress: number;
  message: string;
  booted: { slot: string; version: string };
  floor: number | null;
  target?: { version: string; svn: number; slot?: string; source: 'file' | 'manifest' };
  last?: UpdateResult;
  at: string;
}

// Drain (issue 13 §4.1): while the updater drains, the keystore refuses new reservations with
// PKS_UPDATE_DRAINING, whose detail carries the wait; the tester API turns that into
// Retry-After (the IPC carries code and detail only).
export const drainingDetail = (retryAfterSeconds: number): string => `draining for an update; retry after ${retryAfterSeconds} s`;
export function retryAfterOf(detail: string): number | undefined {
  const m = /retry after (\d{1,5}) s$/.exec(detail);
  return m ? Number(m[1]) : undefined;
}

/** A release's display version, MAJOR.MINOR.PATCH (the bundle's pks-release VERSION, the manifest's version). */
export const VERSION = /^[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}$/;

/** -1, 0, 1 like a comparator, for MAJOR.MINOR.PATCH. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) < (pb[i] ?? 0) ? -1 : 1;
  return 0;
}

/**
 * An update manifest (KMS -> box, MQTT `update`, relayed to the updater by the uplink), signed by
 * the KMS signer; the format and its checks are the updater's `manifest.ts`.
 */
export interface ManifestPayload {
  type: 'pks-update-manifest';
  v: 1;
  id: string;
  boxId: string;
  compatible: string;
  version: string;
  svn: number;
  size: number;
  sha256: string;
  url?: string;
  chunks?: { count: number; size: number };
  install: 'window' | 'now';
  createdAt: string;
  expiresAt: string;
}
export interface SignedManifest {
  v: 1;
  payload: string;
  sig: string;
  cert: string;
}
