// The application gate of issue 12: the vault serves keys only while the application and its
// configuration are the ones provisioned. Two checks, both against one signed record:
//   1. PCR 15 of this boot (what pks-measure extended before the vault started, as its
//      measurement log read back from the TPM) equals the provisioned PCR 15; a file changed
//      before boot keeps the box closed until a boot with the file restored;
//   2. the tree digests of the latest re-measurement (pks-measure --live on a timer, written to
//      /run/pks/live-measurements.json) equal the provisioned ones; a file changed while the box
//      runs closes it within one re-measurement, and restoring the file opens it again by itself.
// The record is signed with the vault's HSM identity key when the vault creates its key
// hierarchy (first start after setup) and re-signed by an authorised update, so whoever holds
// the disk but not the HSM PIN (sealed to the TPM) cannot write a record that opens the gate.
// A missing, unsigned or malformed record keeps the gate closed: there is no "first use" later.
// Between an update's install and its mark-good there are two records: the running slot's and
// the pending one the vault made for the new slot (vault-gate.ts `gate-authorise`); the gate
// opens when this boot matches either, so whichever slot the bootloader picks (new, or old after
// a fallback) opens, and nothing else does. `gate-settle` then keeps the one that matched.
import { isPksError, pksError, type PksError } from '../../appliance/errors.js';

export interface TreeDigest {
  readonly name: string;
  readonly digest: string;
}

export interface GateRecord {
  readonly version: 1;
  readonly pcr15: string;
  readonly trees: TreeDigest[];
  readonly at: string;
  /** the release a re-authorised record is for (from the signed measurement manifest) */
  readonly release?: string;
  /** base64 signature by the HSM identity key over gateText() */
  readonly sig: string;
}

export const gateText = (r: Omit<GateRecord, 'sig'>): Buffer =>
  Buffer.from(`pks-gate-v1|${r.pcr15}|${r.trees.map((t) => `${t.name}=${t.digest}`).join(',')}|${r.at}${r.release !== undefined ? `|${r.release}` : ''}`);

export interface GateInputs {
  /** the signed record, or undefined when there is none */
  readonly record: unknown;
  /** the pending record for the slot an update installed, or undefined */
  readonly pending?: unknown;
  /** PCR 15 of this boot, hex */
  readonly bootPcr15: string | undefined;
  /** the latest live re-measurement of the trees, or undefined when none is available */
  readonly live: readonly TreeDigest[] | undefined;
}

export type GateVerdict = { readonly open: true; readonly matched?: 'record' | 'pending' } | { readonly open: false; readonly error: PksError };

const HEX64 = /^[0-9a-f]{64}$/;

function parseRecord(raw: unknown): GateRecord {
  const r = raw as Partial<GateRecord>;
  if (typeof r !== 'object' || r === null || r.version !== 1 || typeof r.pcr15 !== 'string' || !HEX64.test(r.pcr15) || typeof r.at !== 'string' || typeof r.sig !== 'string' || !Array.isArray(r.trees) || r.trees.length < 1 || r.trees.length > 8 || (r.release !== undefined && (typeof r.release !== 'string' || !/^[0-9.]{5,20}$/.test(r.release))))
    throw pksError('PKS_TAMPERED', 'gate record is malformed');
  for (const t of r.trees) if (typeof t?.name !== 'string' || !/^[a-z0-9-]{1,32}$/.test(t.name) || typeof t.digest !== 'string' || !HEX64.test(t.digest)) throw pksError('PKS_TAMPERED', 'gate record is malformed');
  return r as GateRecord;
}

/** Signs a record (at provisioning or an authorised update) with `sign` (the HSM identity key). */
export function signGateRecord(pcr15: string, trees: readonly TreeDigest[], at: Date, sign: (data: Buffer) => Buffer, release?: string): GateRecord {
  const body = { version: 1 as const, pcr15, trees: trees.map((t) => ({ name: t.name, digest: t.digest })), at: at.toISOString(), ...(release !== undefined ? { release } : {}) };
  parseRecord({ ...body, sig: '' });
  return { ...body, sig: sign(gateText(body)).toString('base64') };
}

/** Parses a record and checks its signature (for re-authorisation, which builds on the running one). */
export function verifiedRecord(raw: unknown, verify: (data: Buffer, sig: Buffer) => boolean): GateRecord {
  const r = parseRecord(raw);
  let ok = false;
  try {
    ok = verify(gateText(r), Buffer.from(r.sig, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_TAMPERED', 'gate record is not signed by this vault');
  return r;
}

/**
 * The verdict: open when this boot matches the record or the pending one; closed for the
 * record's reason otherwise (the pending one's only when there is no usable record). The reason
 * names what differs, never a digest (they would help nobody but an attacker).
 */
export function checkGate(i: GateInputs, verify: (data: Buffer, sig: Buffer) => boolean): GateVerdict {
  const main = checkOne({ ...i, pending: undefined }, verify);
  if (main.open || i.pending === undefined) return main.open ? { open: true, matched: 'record' } : main;
  const p = checkOne({ ...i, record: i.pending }, verify);
  return p.open ? { open: true, matched: 'pending' } : main;
}

function checkOne(i: GateInputs, verify: (data: Buffer, sig: Buffer) => boolean): GateVerdict {
  const closed = (detail: string): GateVerdict => ({ open: false, error: pksError('PKS_TAMPERED', detail) });
  if (i.record === undefined) return closed('no provisioned gate record');
  let r: GateRecord;
  try {
    r = verifiedRecord(i.record, verify);
  } catch (e) {
    return { open: false, error: e as PksError };
  }
  if (!i.bootPcr15 || i.bootPcr15.toLowerCase() !== r.pcr15) return closed('PCR 15 of this boot differs from the provisioned value');
  if (!i.live) return closed('no live measurement of the application');
  for (const t of r.trees) {
    const l = i.live.find((x) => x.name === t.name);
    if (!l || l.digest.toLowerCase() !== t.digest) return closed(`${t.name} differs from the provisioned measurement`);
  }
  return { open: true };
}

/**
 * The gate as the vault holds it: re-evaluated every `everyMs` from fresh inputs; `assertOpen()`
 * before each key operation. `onChange` fires on every open/closed transition (the vault logs
 * it; the sentinel's vault-status probe turns a closed gate into a critical alert).
 */
export class Gate {
  private verdict: GateVerdict = { open: false, error: pksError('PKS_TAMPERED', 'gate not evaluated yet') };
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly inputs: () => Promise<GateInputs>,
    private readonly verify: (data: Buffer, sig: Buffer) => boolean,
    private readonly everyMs: number,
    private readonly onChange: (v: GateVerdict) => void = () => undefined,
  ) {}

  async evaluate(): Promise<GateVerdict> {
    let v: GateVerdict;
    try {
      v = checkGate(await this.inputs(), this.verify);
    } catch (e) {
      // a coded reason from the inputs (stale, not root's, missing) is kept; anything else is generic
      v = { open: false, error: isPksError(e) && e.code === 'PKS_TAMPERED' ? e : pksError('PKS_TAMPERED', 'gate inputs cannot be read') };
    }
    const changed = v.open !== this.verdict.open || (v.open && this.verdict.open && v.matched !== this.verdict.matched) || (!v.open && !this.verdict.open && v.error.detail !== this.verdict.error.detail);
    this.verdict = v;
    if (changed) this.onChange(v);
    return v;
  }

  start(): void {
    this.timer = setInterval(() => void this.evaluate(), this.everyMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  get status(): { open: boolean; code?: string; reason?: string } {
    return this.verdict.open ? { open: true } : { open: false, code: this.verdict.error.code, reason: this.verdict.error.detail };
  }

  /** which record this boot matched at the last evaluation (undefined while closed) */
  get matched(): 'record' | 'pending' | undefined {
    return this.verdict.open ? this.verdict.matched : undefined;
  }

  assertOpen(): void {
    if (!this.verdict.open) throw this.verdict.error;
  }
}
