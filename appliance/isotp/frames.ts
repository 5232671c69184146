// ISO-TP (ISO 15765-2:2016) protocol control information on classic CAN and CAN FD: single,
// first, consecutive and flow-control frames, the escape forms for CAN FD single frames and for
// messages over 4095 bytes, padding, and the STmin encoding. Pure encode/decode, no timing.
import { pksError } from '../errors.js';

export interface CanFrame {
  id: number;
  data: Buffer;
  /** a CAN FD frame (data up to 64 bytes, DLC steps 8..64) */
  fd?: boolean;
}

/** CAN FD data lengths a DLC can express; classic CAN stops at 8. */
export const FD_LENGTHS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64] as const;
export const FC = Object.freeze({ CTS: 0, WAIT: 1, OVFLW: 2 });

export type Pci =
  | { kind: 'SF'; data: Buffer }
  | { kind: 'FF'; length: number; data: Buffer }
  | { kind: 'CF'; sn: number; data: Buffer }
  | { kind: 'FC'; status: number; bs: number; stMin: number };

export interface FrameFormat {
  fd: boolean;
  /** TX_DL: 8 for classic CAN; 8..64 (a CAN FD length) for CAN FD */
  txDl: number;
  /** pad frames to TX_DL with this byte (classic: optional, CAN FD: always to a valid length) */
  padding?: number;
}

/** The smallest CAN FD length holding `n` bytes. */
export const fdLength = (n: number): number => FD_LENGTHS.find((l) => l >= n) ?? 64;

/** STmin byte to milliseconds; reserved values count as 127 ms (ISO 15765-2 9.6.5.4). */
export function stMinMs(b: number): number {
  if (b <= 0x7f) return b;
  if (b >= 0xf1 && b <= 0xf9) return (b - 0xf0) / 10;
  return 0x7f;
}

function pad(f: FrameFormat, b: Buffer): Buffer {
  const want = f.fd ? (f.padding !== undefined ? f.txDl : fdLength(b.length)) : f.padding !== undefined ? 8 : b.length;
  if (b.length >= want) return b;
  return Buffer.concat([b, Buffer.alloc(want - b.length, f.padding ?? 0xcc)]);
}

/** Bytes of payload a single frame can carry. */
export const sfCapacity = (f: FrameFormat): number => (f.txDl <= 8 ? 7 : f.txDl - 2);

export function encodeSF(f: FrameFormat, data: Buffer): Buffer {
  if (data.length === 0 || data.length > sfCapacity(f)) throw pksError('PKS_OUT_OF_RANGE', `ISO-TP single frame of ${data.length} bytes`);
  // the 4-bit SF_DL only in frames of up to 8 bytes; longer CAN FD frames use the escape form
  const classic = data.length <= 7 && !(f.fd && f.padding !== undefined && f.txDl > 8);
  if (classic) return pad(f, Buffer.concat([Buffer.from([data.length]), data]));
  return pad(f, Buffer.concat([Buffer.from([0x00, data.length]), data]));
}

export function encodeFF(f: FrameFormat, length: number, data: Buffer): Buffer {
  const head = length <= 0xfff ? Buffer.from([0x10 | (length >> 8), length & 0xff]) : Buffer.from([0x10, 0x00, (length >>> 24) & 0xff, (length >>> 16) & 0xff, (length >>> 8) & 0xff, length & 0xff]);
  const b = Buffer.concat([head, data]);
  if (b.length !== f.txDl) throw pksError('PKS_OUT_OF_RANGE', 'ISO-TP first frame must fill TX_DL');
  return b;
}

/** Payload bytes in the first frame for a message of `length`. */
export const ffCapacity = (f: FrameFormat, length: number): number => f.txDl - (length <= 0xfff ? 2 : 6);

export const encodeCF = (f: FrameFormat, sn: number, data: Buffer): Buffer => pad(f, Buffer.concat([Buffer.from([0x20 | (sn & 0x0f)]), data]));

export const encodeFC = (f: FrameFormat, status: number, bs: number, stMin: number): Buffer => pad(f, Buffer.from([0x30 | status, bs, stMin]));

/**
 * Decodes the PCI of a received frame; anything ISO 15765-2 says to ignore is PKS_ISOTP_FRAME
 * (the receiver drops it and goes on).
 */
export function decodeFrame(f: FrameFormat, b: Buffer): Pci {
  const bad = (why: string): never => {
    throw pksError('PKS_ISOTP_FRAME', why);
  };
  if (b.length === 0) bad('empty CAN frame');
  const type = b[0]! >> 4;
  switch (type) {
    case 0: {
      const low = b[0]! & 0x0f;
      if (low !== 0) {
        if (b.length > 8 && f.fd) bad('single frame with a 4-bit length in a CAN FD frame over 8 bytes');
        if (low + 1 > b.length) bad(`single frame says ${low} bytes, frame has ${b.length - 1}`);
        return { kind: 'SF', data: Buffer.from(b.subarray(1, 1 + low)) };
      }
      // the escape form (SF_DL in the second byte) exists only in CAN FD frames over 8 bytes
      if (b.length <= 8) bad('single frame with length 0');
      const len = b[1]!;
      if (len === 0 || len + 2 > b.length) bad(`single frame says ${len} bytes, frame has ${b.length - 2}`);
      return { kind: 'SF', data: Buffer.from(b.subarray(2, 2 + len)) };
    }
    case 1: {
      if (b.length < 8) bad('first frame shorter than 8 bytes');
      let length = ((b[0]! & 0x0f) << 8) | b[1]!;
      let off = 2;
      if (length === 0) {
        if (b.length < 6) bad('first frame escape without a 32-bit length');
        length = b.readUInt32BE(2);
        off = 6;
        if (length <= 0xfff) bad('first frame escape for a message under 4096 bytes');
      }
      // a message that fits one single frame must not be segmented
      if (length <= (b.length <= 8 ? 7 : b.length - 2)) bad(`first frame for ${length} bytes`);
      return { kind: 'FF', length, data: Buffer.from(b.subarray(off)) };
    }
    case 2:
      return { kind: 'CF', sn: b[0]! & 0x0f, data: Buffer.from(b.subarray(1)) };
    case 3: {
      if (b.length < 3) bad('flow control shorter than 3 bytes');
      const status = b[0]! & 0x0f;
      if (status > 2) bad(`flow status ${status}`);
      return { kind: 'FC', status, bs: b[1]!, stMin: b[2]! };
    }
    default:
      return bad(`PCI type ${type}`);
  }
}
