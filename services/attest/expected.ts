// The expected PCR values of an image, computed on the build host from the UKI and the staged
// rootfs, without booting it, and recorded in /usr/lib/pks-image/expected-pcrs.json.
//   PCR 4  the firmware's "Calling EFI Application from Boot Option", the separator, the UKI's
//          Authenticode digest, then the kernel's (systemd-stub v252 LoadImage()s it);
//   PCR 7  OVMF without Secure Boot (SecureBoot=0, empty PK/KEK/db/dbx), then the separator;
//   PCR 11 systemd-stub's measurement of the UKI sections, then the words systemd-pcrphase adds
//          as the boot goes on (the value depends on the phase: all of them are recorded);
//   PCR 15 our application and configuration trees (measure.ts).
// These depend only on the UKI (reused from the cache), the firmware (Debian's OVMF) and the
// measured trees, so they are the same from build to build as long as those are.
import { readFile } from 'node:fs/promises';
import { pksError } from '../../appliance/errors.js';
import { APP_PCR, measureTrees, pcr15Of, type TreeMeasurement } from './measure.js';
import {
  PCR_BANK,
  authenticodeDigest,
  extend,
  ovmfNoSecureBootPcr7Digests,
  parseDigestHex,
  replay,
  sha256,
  ukiPcr11Digests,
  ukiPcr4Digests,
} from './pcr.js';

/** One A/B slot's boot chain: its UKI differs from the other slot's only in the command line. */
export interface SlotExpected {
  readonly uki: { readonly sha256: string; readonly authenticode: string };
  /** PCR 4 and 11 of a boot of this slot */
  readonly pcrs: Record<string, string>;
  readonly pcr11Phases: Record<string, string>;
}

export interface ExpectedPcrs {
  readonly version: 1;
  readonly bank: typeof PCR_BANK;
  /** Absent when computed without a UKI (Yocto rootfs step): then only PCR 15 is recorded. */
  readonly uki?: { readonly sha256: string; readonly authenticode: string };
  /** PCR index -> expected value (hex). PCR 11 is its value once the boot phase "ready" is reached. */
  readonly pcrs: Record<string, string>;
  /** PCR 11 after the UKI and after each systemd-pcrphase word. */
  readonly pcr11Phases: Record<string, string>;
  /**
   * The A/B layout (issue 13): each slot's PCR 4 and 11. The top-level pcrs and pcr11Phases are
   * slot A's; forSlot() gives the view of the slot a box booted.
   */
  readonly slots?: Readonly<Record<string, SlotExpected>>;
  readonly measurements: TreeMeasurement[];
  readonly notes: Record<string, string>;
}

/** Phases systemd 252 passes on a Debian boot without a systemd initrd (initramfs-tools). */
export const BOOT_PHASES_READY = ['sysinit', 'ready'] as const;

function slotExpected(uki: Buffer, loader: Buffer | undefined): SlotExpected {
  const phases: Record<string, string> = {};
  let v = replay(ukiPcr11Digests(uki));
  phases.uki = v.toString('hex');
  for (const w of BOOT_PHASES_READY) {
    v = extend(v, sha256(w));
    phases[w] = v.toString('hex');
  }
  return {
    uki: { sha256: sha256(uki).toString('hex'), authenticode: authenticodeDigest(uki).toString('hex') },
    pcrs: { '4': replay(ukiPcr4Digests(uki, loader)).toString('hex'), '11': v.toString('hex') },
    pcr11Phases: phases,
  };
}

/**
 * uki: one UKI booted straight from the firmware; slots: the A/B layout's UKIs (slot name ->
 * UKI), started by the boot loader `loader` (systemd-boot).
 */
export async function computeExpected(opts: { uki?: Buffer | undefined; slots?: Record<string, Buffer>; loader?: Buffer; rootfs: string }): Promise<ExpectedPcrs> {
  const measurements = await measureTrees(opts.rootfs);
  const pcrs: Record<string, string> = { [String(APP_PCR)]: pcr15Of(measurements).toString('hex') };
  const slotNames = Object.keys(opts.slots ?? {}).sort();
  if (opts.uki && slotNames.length > 0) throw pksError('PKS_BAD_REQUEST', 'give one UKI or the slots, not both');
  const slots: Record<string, SlotExpected> = {};
  for (const n of slotNames) slots[n] = slotExpected(opts.slots![n]!, opts.loader);
  const first = opts.uki ? slotExpected(opts.uki, opts.loader) : slotNames.length > 0 ? slots[slotNames[0]!] : undefined;
  if (first) Object.assign(pcrs, first.pcrs, { '7': replay(ovmfNoSecureBootPcr7Digests()).toString('hex') });
  return {
    version: 1,
    bank: PCR_BANK,
    ...(first ? { uki: first.uki } : {}),
    pcrs,
    pcr11Phases: first ? first.pcr11Phases : {},
    ...(slotNames.length > 0 ? { slots } : {}),
    measurements,
    notes: {
      '4': `boot option -> separator -> ${opts.loader ? 'systemd-boot (Authenticode) -> ' : ''}UKI (Authenticode) -> kernel from .linux (Authenticode)`,
      '7': 'OVMF, Secure Boot off, no keys enrolled; a production board with Secure Boot has its own value',
      '11': `UKI sections, then systemd-pcrphase ${BOOT_PHASES_READY.join(', ')}`,
      [String(APP_PCR)]: 'pks-app (/usr/lib/pks), then pks-config (/etc/pks without credentials/)',
    },
  };
}

/** Reads and checks expected-pcrs.json. */
export async function readExpected(p: string): Promise<ExpectedPcrs> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(p, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw pksError('PKS_NOT_FOUND', `no expected PCR values at ${p}`);
    throw pksError('PKS_CONFIG_INVALID', `${p} is not JSON`, e);
  }
  const o = raw as Partial<ExpectedPcrs>;
  const bad = (what: string): never => {
    throw pksError('PKS_CONFIG_INVALID', `expected PCR values: ${what}`);
  };
  if (typeof o !== 'object' || o === null || o.version !== 1 || o.bank !== PCR_BANK) bad('wrong version or bank');
  if (typeof o.pcrs !== 'object' || o.pcrs === null) bad('pcrs missing');
  for (const [k, val] of Object.entries(o.pcrs!)) {
    if (!/^(?:[0-9]|1[0-9]|2[0-3])$/.test(k) || typeof val !== 'string') bad(`bad entry for PCR ${k.slice(0, 8)}`);
    parseDigestHex(val);
  }
  if (typeof o.pcr11Phases !== 'object' || o.pcr11Phases === null) bad('pcr11Phases missing');
  for (const val of Object.values(o.pcr11Phases!)) parseDigestHex(String(val));
  if (o.slots !== undefined) {
    if (typeof o.slots !== 'object' || o.slots === null) bad('slots malformed');
    for (const [n, sl] of Object.entries(o.slots!)) {
      if (!/^[A-Z]$/.test(n) || typeof sl?.pcrs !== 'object' || sl.pcrs === null || typeof sl.pcr11Phases !== 'object' || sl.pcr11Phases === null) bad(`slot ${n.slice(0, 8)} malformed`);
      for (const val of [...Object.values(sl.pcrs), ...Object.values(sl.pcr11Phases)]) if (!/^[0-9a-f]{64}$/i.test(String(val))) bad(`slot ${n} has a malformed digest`);
    }
  }
  if (!Array.isArray(o.measurements)) bad('measurements missing');
  for (const m of o.measurements!) if (typeof m?.name !== 'string' || typeof m.digest !== 'string') bad('malformed measurement');
  return o as ExpectedPcrs;
}

/** Every PCR 11 value any slot's boot phase reaches (what the signed PCR 11 policy approves). */
export function allPcr11Values(e: ExpectedPcrs): string[] {
  const all = [...Object.values(e.pcr11Phases), ...Object.values(e.slots ?? {}).flatMap((s) => Object.values(s.pcr11Phases))];
  return [...new Set(all)];
}

/**
 * The expected values as a box booted from one slot sees them: the slot whose PCR 4 (its UKI as
 * loaded) is the live one, or the top-level values when there is no slot table or none matches
 * (then the mismatch is reported against slot A's).
 */
export function forLivePcr4(e: ExpectedPcrs, livePcr4Hex: string): ExpectedPcrs & { slot?: string } {
  for (const [name, s] of Object.entries(e.slots ?? {})) {
    if (s.pcrs['4'] === livePcr4Hex) return { ...e, uki: s.uki, pcrs: { ...e.pcrs, ...s.pcrs }, pcr11Phases: s.pcr11Phases, slot: name };
  }
  return e;
}
