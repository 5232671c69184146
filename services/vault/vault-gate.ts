// The application gate wired into the vault (issue 12): evaluated every few seconds from the
// signed record and the live measurement (gate-inputs.ts), asked before every key operation
// (Vault.setGuard), shown in `status`, and two verbs:
//   gate-record (pksctl, i.e. root at the console): signs the current live measurement as the
//     provisioned value, only while the gate is open (so it can never turn a tampered
//     measurement into a provisioned one: a unit an attacker added to the disk could call it);
//   gate-authorise {manifest} (updater): re-authorisation by a signed update, below;
//   gate-settle (updater, after mark-good or after a fallback): keeps the record this boot
//     matched and drops the other one;
//   gate-report {nonce} (uplink): the vault's verdict signed by the identity key for the KMS
//     (appliance/contracts/attestation.ts), so the uplink can carry it but not forge it.
// The record is made by the vault by itself exactly once: when this process created the key
// hierarchy (the first start after setup, with the measurement of that boot). Later, a missing
// record keeps the gate closed: deleting it does not open a "first use" again.
//
// Re-authorisation by update (issue 12 with 13): the updater is a caller the vault does not
// trust, so `gate-authorise` takes only a measurement manifest the build signed with the image
// signing key (appliance/contracts/measurement.ts) and
//   - answers only while the gate is open on the running slot against its own record: a box
//     whose disk was changed cannot get a record for anything;
//   - checks the signature itself against the key pinned in the measured application tree
//     (gate.manifestKeyFile, /usr/lib/pks/measurement-signing.pem): changing the pin changes
//     pks-app, which closes the gate, which refuses the request;
//   - takes a release newer than the running record's, with the same trees in the same order;
//   - builds the record itself: the application trees from the manifest, the site trees
//     (the configuration setup provisioned, which the build cannot know) from the running
//     record, PCR 15 as their replay, signed with the identity key, written as the pending
//     record next to the running one (both open the gate until gate-settle).
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import type { VerbTable } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { gateReportText, type GateReport } from '../../appliance/contracts/attestation.js';
import { hex } from '../../appliance/schema.js';
import { SITE_TREE_NAMES, measurementManifestText, parseMeasurementManifest, pcr15Replay, type MeasurementManifest } from '../../appliance/contracts/measurement.js';
import { Gate, verifiedRecord, type GateRecord } from './gate.js';
import { dropPending, gateInputs, pendingFile, promotePending, readLive, readRecord, writeRecord, type GateFiles } from './gate-inputs.js';
import type { Vault } from './vault.js';

export interface VaultGate {
  readonly gate: Gate | null;
  verbs: VerbTable;
  status(): { open: boolean; code?: string; reason?: string } | { open: false; code: string; reason: string; configured: false };
  stop(): void;
}

/** Newer as MAJOR.MINOR.PATCH; a record without a release (the first one) takes any. */
const newer = (a: string, b: string | undefined): boolean => {
  if (b === undefined) return true;
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return (pa[i] ?? 0) > (pb[i] ?? 0);
  return false;
};

/** The record for the new slot, from a manifest already verified and the running record. */
export function authorisedTrees(m: MeasurementManifest, base: GateRecord): { pcr15: string; trees: { name: string; digest: string }[] } {
  if (m.trees.map((t) => t.name).join(',') !== base.trees.map((t) => t.name).join(','))
    throw pksError('PKS_UPDATE_MEASUREMENT', 'measurement manifest measures other trees than this box');
  if (!newer(m.release, base.release)) throw pksError('PKS_UPDATE_MEASUREMENT', `measurement manifest is for ${m.release}, not newer than the running ${base.release ?? '?'}`);
  const trees = m.trees.map((t) => (SITE_TREE_NAMES.includes(t.name) ? { name: t.name, digest: base.trees.find((b) => b.name === t.name)!.digest } : { name: t.name, digest: t.digest }));
  return { pcr15: pcr15Replay(trees), trees };
}

export async function startVaultGate(vault: Vault, boxId: string, files: GateFiles | null, everyMs: number, log: Logger, manifestKeyFile?: string): Promise<VaultGate> {
  let identity: KeyObject | null = null;
  const verifier = (d: Buffer, s: Buffer): boolean => {
    identity ??= createPublicKey({ key: vault.publicKey('identity'), format: 'der', type: 'spki' });
    return verify('sha256', d, { key: identity, dsaEncoding: 'ieee-p1363' }, s);
  };
  const record = async (why: string) => {
    const live = readLive(files!);
    const r = vault.signGateRecord(live.pcr15, live.trees);
    await writeRecord(files!, r);
    log.warn('application gate: provisioned value recorded', { why, trees: r.trees.map((t) => t.name) });
    return r;
  };
  let provisioned = false;
  const gate = files
    ? new Gate(
        async () => {
          if (!provisioned && vault.hierarchyCreated && readRecord(files) === undefined) {
            await record('key hierarchy created by this start');
            provisioned = true;
          }
          return gateInputs(files);
        },
        verifier,
        everyMs,
        (v) => (v.open ? log.info('application gate open: measurement as provisioned') : log.error('application gate closed, no key operation is served', { code: v.error.code, detail: v.error.detail })),
      )
    : null;
  if (gate) {
    vault.setGuard(() => gate.assertOpen(), () => gate.status);
    await gate.evaluate();
    gate.start();
  }
  /** a fresh verdict; the gate's own PKS_TAMPERED while it is closed */
  const openGate = async (): Promise<Gate> => {
    if (!gate) throw pksError('PKS_NOT_FOUND', 'no application gate on this box');
    const v = await gate.evaluate();
    if (!v.open) throw v.error;
    return gate;
  };
  const status = () => (gate ? gate.status : { open: false as const, code: 'PKS_TAMPERED', reason: 'no application gate on this box', configured: false as const });
  const verbs: VerbTable = {
    'gate-record': {
      request: { type: 'object', additionalProperties: false, properties: {} },
      handler: async () => {
        const g = await openGate();
        if (g.matched === 'pending') throw pksError('PKS_UPDATE_BUSY', 'an update is pending: settle it first');
        const r = await record('gate-record by the console');
        await g.evaluate();
        return { recorded: r.at, trees: r.trees.map((t) => t.name), gate: g.status };
      },
    },
    'gate-authorise': {
      request: { type: 'object', additionalProperties: false, required: ['manifest'], properties: { manifest: { type: 'string', minLength: 2, maxLength: 16 * 1024 } } },
      maxBytes: 20 * 1024,
      handler: async (b: { manifest: string }) => {
        const g = await openGate();
        if (g.matched !== 'record') throw pksError('PKS_UPDATE_BUSY', 'this boot runs the pending record: settle it first');
        const base = verifiedRecord(readRecord(files!), verifier);
        const m = parseMeasurementManifest(parseJsonOr('PKS_UPDATE_MEASUREMENT', 'measurement manifest', b.manifest));
        let pin: KeyObject;
        try {
          pin = createPublicKey(readFileSync(manifestKeyFile ?? '', 'utf8'));
        } catch {
          throw pksError('PKS_UPDATE_MEASUREMENT', 'no measurement signing key is pinned on this slot');
        }
        let ok = false;
        try {
          const { sig, ...body } = m;
          ok = verify('sha256', measurementManifestText(body), pin, Buffer.from(sig, 'base64'));
        } catch {
          ok = false;
        }
        if (!ok) throw pksError('PKS_UPDATE_MEASUREMENT', 'measurement manifest is not signed by the pinned image signing key');
        const next = authorisedTrees(m, base);
        const r = vault.signGateRecord(next.pcr15, next.trees, new Date(), m.release);
        await writeRecord(files!, r, pendingFile(files!));
        log.warn('application gate: measurement of the next release authorised (pending until gate-settle)', { release: m.release, trees: r.trees.map((t) => t.name) });
        return { pending: r.at, release: m.release, trees: r.trees.map((t) => t.name) };
      },
    },
    'gate-settle': {
      request: { type: 'object', additionalProperties: false, properties: {} },
      handler: async () => {
        const g = await openGate();
        const kept = g.matched ?? 'record';
        if (kept === 'pending') await promotePending(files!);
        else await dropPending(files!);
        await g.evaluate();
        log.info('application gate settled', { kept });
        return { kept, gate: g.status };
      },
    },
    'gate-report': {
      request: { type: 'object', additionalProperties: false, required: ['nonce'], properties: { nonce: hex(32) } },
      handler: async (b: { nonce: string }) => {
        if (gate) await gate.evaluate();
        const st = status();
        const body: Omit<GateReport, 'sig'> = { open: st.open, ...(st.open ? {} : { code: st.code, reason: st.reason }), at: new Date().toISOString() };
        const sig = vault.signGateReport(gateReportText(boxId, Buffer.from(b.nonce, 'hex'), body));
        return { ...body, sig: sig.toString('base64') } satisfies GateReport;
      },
    },
  };
  return { gate, verbs, status, stop: () => gate?.stop() };
}
