// The firmware's TCG event log (crypto-agile format, TCG PC Client PFP spec), as Linux exposes it
// in /sys/kernel/security/tpm0/binary_bios_measurements, parsed and replayed. Parsing the binary
// ourselves keeps the check independent of tpm2_eventlog's YAML, which changes between versions.
import { pksError } from '../../appliance/errors.js';
import { DIGEST_BYTES, ZERO_PCR, extend } from './pcr.js';

export const EV_NO_ACTION = 0x3;
export const EV_SEPARATOR = 0x4;
export const EV_EFI_ACTION = 0x80000007;
const TPM_ALG_SHA256 = 0x000b;

const EVENT_TYPES: Record<number, string> = {
  0x0: 'EV_PREBOOT_CERT', 0x1: 'EV_POST_CODE', 0x3: 'EV_NO_ACTION', 0x4: 'EV_SEPARATOR', 0x5: 'EV_ACTION',
  0x6: 'EV_EVENT_TAG', 0x7: 'EV_S_CRTM_CONTENTS', 0x8: 'EV_S_CRTM_VERSION', 0xd: 'EV_IPL', 0xe: 'EV_PLATFORM_CONFIG_FLAGS',
  0x80000001: 'EV_EFI_VARIABLE_DRIVER_CONFIG', 0x80000002: 'EV_EFI_VARIABLE_BOOT', 0x80000003: 'EV_EFI_BOOT_SERVICES_APPLICATION',
  0x80000004: 'EV_EFI_BOOT_SERVICES_DRIVER', 0x80000005: 'EV_EFI_RUNTIME_SERVICES_DRIVER', 0x80000006: 'EV_EFI_GPT_EVENT',
  0x80000007: 'EV_EFI_ACTION', 0x80000008: 'EV_EFI_PLATFORM_FIRMWARE_BLOB', 0x80000009: 'EV_EFI_HANDOFF_TABLES',
  0x8000000a: 'EV_EFI_PLATFORM_FIRMWARE_BLOB2', 0x8000000b: 'EV_EFI_HANDOFF_TABLES2', 0x800000e0: 'EV_EFI_VARIABLE_AUTHORITY',
};

export interface LogEvent {
  readonly pcr: number;
  readonly type: number;
  readonly typeName: string;
  /** SHA-256 digest; undefined for the spec-id header and logs without a SHA-256 bank. */
  readonly sha256: Buffer | undefined;
  readonly data: Buffer;
}

const MAX_EVENTS = 10_000;
const MAX_EVENT_DATA = 1 << 24;

/** Parses a crypto-agile event log; anything malformed is PKS_BAD_REQUEST, never a crash. */
export function parseEventLog(buf: Buffer): LogEvent[] {
  const bad = (what: string): never => {
    throw pksError('PKS_BAD_REQUEST', `TPM event log: ${what}`);
  };
  let off = 0;
  const need = (n: number): void => {
    if (off + n > buf.length) bad('truncated');
  };
  // header event: TCG_PCR_EVENT (SHA-1 format) carrying TCG_EfiSpecIDEvent
  need(32);
  const hdrType = buf.readUInt32LE(4);
  const hdrSize = buf.readUInt32LE(28);
  off = 32;
  need(hdrSize);
  const spec = buf.subarray(off, off + hdrSize);
  off += hdrSize;
  if (hdrType !== EV_NO_ACTION || !spec.subarray(0, 16).toString('latin1').startsWith('Spec ID Event03')) {
    bad('not a crypto-agile (TCG2) log');
  }
  if (spec.length < 28) bad('short spec-id event');
  const nAlgs = spec.readUInt32LE(24);
  if (nAlgs < 1 || nAlgs > 16 || spec.length < 28 + nAlgs * 4) bad('bad algorithm list');
  const sizes = new Map<number, number>();
  for (let i = 0; i < nAlgs; i++) sizes.set(spec.readUInt16LE(28 + i * 4), spec.readUInt16LE(30 + i * 4));
  if (sizes.has(TPM_ALG_SHA256) && sizes.get(TPM_ALG_SHA256) !== DIGEST_BYTES) bad('bad sha256 digest size');

  const events: LogEvent[] = [{ pcr: buf.readUInt32LE(0), type: hdrType, typeName: 'EV_NO_ACTION', sha256: undefined, data: spec }];
  while (off < buf.length) {
    if (events.length > MAX_EVENTS) bad('too many events');
    // trailing zero padding (some firmware pads the log area)
    if (buf.length - off >= 8 && buf.readUInt32LE(off) === 0 && buf.readUInt32LE(off + 4) === 0 && buf.subarray(off).every((b) => b === 0)) break;
    need(12);
    const pcr = buf.readUInt32LE(off);
    const type = buf.readUInt32LE(off + 4);
    const count = buf.readUInt32LE(off + 8);
    off += 12;
    if (count > 16) bad('too many digests in one event');
    let digest: Buffer | undefined;
    for (let i = 0; i < count; i++) {
      need(2);
      const alg = buf.readUInt16LE(off);
      const size = sizes.get(alg);
      if (size === undefined) bad(`unknown algorithm 0x${alg.toString(16)}`);
      need(2 + size!);
      if (alg === TPM_ALG_SHA256) digest = Buffer.from(buf.subarray(off + 2, off + 2 + size!));
      off += 2 + size!;
    }
    need(4);
    const size = buf.readUInt32LE(off);
    off += 4;
    if (size > MAX_EVENT_DATA) bad('event data too large');
    need(size);
    const data = Buffer.from(buf.subarray(off, off + size));
    off += size;
    if (pcr > 23) bad(`PCR index ${pcr} out of range`);
    events.push({ pcr, type, typeName: EVENT_TYPES[type] ?? `0x${type.toString(16)}`, sha256: digest, data });
  }
  return events;
}

/**
 * Replays the SHA-256 bank: every event but EV_NO_ACTION extends its PCR. PCR 0 starts at the
 * locality the StartupLocality event names (0 when there is none).
 */
export function replayEventLog(events: readonly LogEvent[]): Map<number, Buffer> {
  const pcrs = new Map<number, Buffer>();
  for (const e of events) {
    if (e.type === EV_NO_ACTION) {
      if (e.data.subarray(0, 16).toString('latin1') === 'StartupLocality\0' && e.data.length >= 17) {
        const init = Buffer.alloc(DIGEST_BYTES);
        init[DIGEST_BYTES - 1] = e.data[16]!;
        pcrs.set(0, init);
      }
      continue;
    }
    if (!e.sha256) throw pksError('PKS_BAD_REQUEST', 'TPM event log: event without a SHA-256 digest');
    pcrs.set(e.pcr, extend(pcrs.get(e.pcr) ?? ZERO_PCR, e.sha256));
  }
  return pcrs;
}

/** The SHA-256 digests extended into one PCR, in order. */
export const pcrDigests = (events: readonly LogEvent[], pcr: number): Buffer[] =>
  events.filter((e) => e.pcr === pcr && e.type !== EV_NO_ACTION && e.sha256).map((e) => e.sha256!);
