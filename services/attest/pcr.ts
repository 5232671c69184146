// PCR arithmetic of the SHA-256 bank: extend, replay, and the digests UEFI firmware and
// systemd-stub put into the boot-chain PCRs, so that expected values can be computed on the
// build host from the UKI alone, without booting it.
import { createHash } from 'node:crypto';
import { pksError } from '../../appliance/errors.js';

export const PCR_BANK = 'sha256';
export const DIGEST_BYTES = 32;
export const ZERO_PCR = Buffer.alloc(DIGEST_BYTES);

export const sha256 = (...parts: (Buffer | string)[]): Buffer => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

/** PCR := H(PCR || digest), the TPM2_PCR_Extend of one bank. */
export function extend(pcr: Buffer, digest: Buffer): Buffer {
  if (digest.length !== DIGEST_BYTES) throw pksError('PKS_BAD_HEX', 'digest is not 32 bytes');
  return sha256(pcr, digest);
}

export const replay = (digests: readonly Buffer[], initial: Buffer = ZERO_PCR): Buffer => digests.reduce(extend, initial);

export function parseDigestHex(hex: string): Buffer {
  const h = hex.replace(/^0x/i, '');
  if (!/^[0-9a-fA-F]{64}$/.test(h)) throw pksError('PKS_BAD_HEX', 'expected a SHA-256 digest in hex');
  return Buffer.from(h, 'hex');
}

// ---- PE images -------------------------------------------------------------------------------

export interface PeSection {
  readonly name: string;
  readonly virtualSize: number;
  readonly virtualAddress: number;
  readonly rawSize: number;
  readonly rawOffset: number;
}

interface PeLayout {
  readonly checksumOffset: number;
  readonly certDirOffset: number | undefined;
  readonly certSize: number;
  readonly sizeOfHeaders: number;
  readonly sections: PeSection[];
}

function peLayout(img: Buffer): PeLayout {
  const bad = (what: string): never => {
    throw pksError('PKS_BAD_REQUEST', `not a PE image: ${what}`);
  };
  if (img.length < 0x40 || img.readUInt16LE(0) !== 0x5a4d) bad('no MZ header');
  const pe = img.readUInt32LE(0x3c);
  if (pe + 24 > img.length || img.readUInt32LE(pe) !== 0x00004550) bad('no PE signature');
  const nSections = img.readUInt16LE(pe + 6);
  const optSize = img.readUInt16LE(pe + 20);
  const opt = pe + 24;
  if (opt + optSize > img.length) bad('truncated optional header');
  const magic = img.readUInt16LE(opt);
  if (magic !== 0x10b && magic !== 0x20b) bad('unknown optional header magic');
  const dirs = opt + (magic === 0x20b ? 112 : 96);
  const nDirs = img.readUInt32LE(dirs - 4);
  const certDirOffset = nDirs > 4 ? dirs + 4 * 8 : undefined;
  const certSize = certDirOffset === undefined ? 0 : img.readUInt32LE(certDirOffset + 4);
  const sizeOfHeaders = img.readUInt32LE(opt + 60);
  const sections: PeSection[] = [];
  const table = opt + optSize;
  if (table + nSections * 40 > img.length) bad('truncated section table');
  for (let i = 0; i < nSections; i++) {
    const s = table + i * 40;
    sections.push({
      name: img.subarray(s, s + 8).toString('latin1').replace(/\0+$/, ''),
      virtualSize: img.readUInt32LE(s + 8),
      virtualAddress: img.readUInt32LE(s + 12),
      rawSize: img.readUInt32LE(s + 16),
      rawOffset: img.readUInt32LE(s + 20),
    });
  }
  for (const s of sections) if (s.rawOffset + s.rawSize > img.length) bad(`section ${s.name} beyond end of file`);
  return { checksumOffset: opt + 64, certDirOffset, certSize, sizeOfHeaders, sections };
}

export const peSections = (img: Buffer): PeSection[] => peLayout(img).sections;

/**
 * The Authenticode-style image digest UEFI firmware extends into PCR 4 for an
 * EV_EFI_BOOT_SERVICES_APPLICATION (EDK2's Tcg2MeasurePeImage): the headers without the
 * checksum and the certificate-table entry, the sections in file order, then any trailing data
 * except the signature.
 */
export function authenticodeDigest(img: Buffer): Buffer {
  const l = peLayout(img);
  const h = createHash('sha256');
  if (l.certDirOffset === undefined) {
    h.update(img.subarray(0, l.checksumOffset));
    h.update(img.subarray(l.checksumOffset + 4, l.sizeOfHeaders));
  } else {
    h.update(img.subarray(0, l.checksumOffset));
    h.update(img.subarray(l.checksumOffset + 4, l.certDirOffset));
    h.update(img.subarray(l.certDirOffset + 8, l.sizeOfHeaders));
  }
  let hashed = l.sizeOfHeaders;
  for (const s of [...l.sections].sort((a, b) => a.rawOffset - b.rawOffset)) {
    if (s.rawSize === 0) continue;
    h.update(img.subarray(s.rawOffset, s.rawOffset + s.rawSize));
    hashed += s.rawSize;
  }
  if (img.length > hashed + l.certSize) h.update(img.subarray(hashed, img.length - l.certSize));
  return h.digest();
}

/** A section's content as the loaded image holds it (VirtualSize bytes, zero-filled). */
export function sectionData(img: Buffer, s: PeSection): Buffer {
  const raw = img.subarray(s.rawOffset, s.rawOffset + Math.min(s.rawSize, s.virtualSize));
  return raw.length === s.virtualSize ? raw : Buffer.concat([raw, Buffer.alloc(s.virtualSize - raw.length)]);
}

// ---- the boot chain of our UKI ---------------------------------------------------------------

/** The order in which systemd-stub (v252) measures UKI sections into PCR 11. */
export const UKI_SECTIONS = ['.linux', '.osrel', '.cmdline', '.initrd', '.splash', '.dtb', '.pcrsig', '.pcrpkey'] as const;

/** Words systemd-pcrphase extends into PCR 11 after the stub, in boot order (v252). */
export const PCRPHASE_WORDS = ['enter-initrd', 'leave-initrd', 'sysinit', 'ready', 'shutdown', 'final'] as const;

export const EFI_ACTION_CALLING_BOOT_OPTION = 'Calling EFI Application from Boot Option';
export const SEPARATOR_DIGEST = sha256(Buffer.alloc(4));

/** The PCR 11 event digests of a UKI: for each present section, its name with NUL, then its content. */
export function ukiPcr11Digests(uki: Buffer): Buffer[] {
  const sections = peSections(uki);
  const out: Buffer[] = [];
  for (const name of UKI_SECTIONS) {
    const s = sections.find((x) => x.name === name);
    if (!s) continue;
    out.push(sha256(Buffer.from(`${name}\0`, 'latin1')), sha256(sectionData(uki, s)));
  }
  return out;
}

/**
 * The PCR 4 event digests when the firmware boots the UKI from a boot option: the EFI action,
 * the separator, the boot loader if there is one (systemd-boot of the A/B layout, which
 * LoadImage()s the slot's UKI), the UKI, then the kernel, which systemd-stub v252 starts
 * through LoadImage (so the firmware measures it too).
 */
export function ukiPcr4Digests(uki: Buffer, loader?: Buffer): Buffer[] {
  const linux = peSections(uki).find((s) => s.name === '.linux');
  if (!linux) throw pksError('PKS_BAD_REQUEST', 'UKI has no .linux section');
  return [
    sha256(EFI_ACTION_CALLING_BOOT_OPTION),
    SEPARATOR_DIGEST,
    ...(loader ? [authenticodeDigest(loader)] : []),
    authenticodeDigest(uki),
    authenticodeDigest(sectionData(uki, linux)),
  ];
}

// ---- PCR 7 on OVMF without Secure Boot ---------------------------------------------------------

const EFI_GLOBAL_VARIABLE = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
const EFI_IMAGE_SECURITY_DATABASE = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';

function guidBytes(guid: string): Buffer {
  const h = guid.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  // EFI_GUID: the first three fields little-endian
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

/** UEFI_VARIABLE_DATA as EV_EFI_VARIABLE_DRIVER_CONFIG carries it. */
export function uefiVariableData(guid: string, name: string, data: Buffer): Buffer {
  const head = Buffer.alloc(32);
  guidBytes(guid).copy(head, 0);
  head.writeBigUInt64LE(BigInt(name.length), 16);
  head.writeBigUInt64LE(BigInt(data.length), 24);
  return Buffer.concat([head, Buffer.from(name, 'utf16le'), data]);
}

/**
 * PCR 7 event digests of OVMF with Secure Boot off and no keys enrolled (Debian's
 * OVMF_VARS_4M.fd): SecureBoot = 0, empty PK, KEK, db, dbx, then the separator. Nothing
 * authenticates the UKI, so no EV_EFI_VARIABLE_AUTHORITY follows.
 */
export function ovmfNoSecureBootPcr7Digests(): Buffer[] {
  return [
    sha256(uefiVariableData(EFI_GLOBAL_VARIABLE, 'SecureBoot', Buffer.from([0]))),
    sha256(uefiVariableData(EFI_GLOBAL_VARIABLE, 'PK', Buffer.alloc(0))),
    sha256(uefiVariableData(EFI_GLOBAL_VARIABLE, 'KEK', Buffer.alloc(0))),
    sha256(uefiVariableData(EFI_IMAGE_SECURITY_DATABASE, 'db', Buffer.alloc(0))),
    sha256(uefiVariableData(EFI_IMAGE_SECURITY_DATABASE, 'dbx', Buffer.alloc(0))),
    SEPARATOR_DIGEST,
  ];
}
