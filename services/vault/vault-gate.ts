// The application gate wired into the vault (issue 12): evaluated every few seconds from the
// signed record and the live measurement (gate-inputs.ts), asked before every key operation
// (Vault.setGuard), shown in `status`, and two verbs:
//   gate-record (pksctl, i.e. root at the console): signs the current live measurement as the
//     provisioned value; for maintenance after an authorised update changed the application.
//   gate-report {nonce} (uplink): the vault's verdict signed by the identity key for the KMS
//     (appliance/contracts/attestation.ts), so the uplink can carry it but not forge it.
// The record is made by the vault by itself exactly once: when this process created the key
// hierarchy (the first start after setup, with the measurement of that boot). Later, a missing
// record keeps the gate closed: deleting it does not open a "first use" again.
import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { pksError } from '../../appliance/errors.js';
import type { VerbTable } from '../../appliance/ipc.js';
import type { Logger } from '../../appliance/log.js';
import { gateReportText, type GateReport } from '../../appliance/contracts/attestation.js';
import { hex } from '../../appliance/schema.js';
import { Gate } from './gate.js';
import { gateInputs, readLive, readRecord, writeRecord, type GateFiles } from './gate-inputs.js';
import type { Vault } from './vault.js';

export interface VaultGate {
  readonly gate: Gate | null;
  verbs: VerbTable;
  status(): { open: boolean; code?: string; reason?: string } | { open: false; code: string; reason: string; configured: false };
  stop(): void;
}

export async function startVaultGate(vault: Vault, boxId: string, files: GateFiles | null, everyMs: number, log: Logger): Promise<VaultGate> {
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
  const status = () => (gate ? gate.status : { open: false as const, code: 'PKS_TAMPERED', reason: 'no application gate on this box', configured: false as const });
  const verbs: VerbTable = {
    'gate-record': {
      request: { type: 'object', additionalProperties: false, properties: {} },
      handler: async () => {
        if (!gate) throw pksError('PKS_NOT_FOUND', 'no application gate on this box');
        const r = await record('gate-record by the console');
        await gate.evaluate();
        return { recorded: r.at, trees: r.trees.map((t) => t.name), gate: gate.status };
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
