// DoIP (ISO 13400-2:2019) messages: the generic header and the payloads a tester and a DoIP
// entity exchange for diagnostics. Pure encode/decode on Buffers, no I/O, so the client, the
// entity, the fuzzers and the pcap writer share one definition of every byte.
//
// Generic header (8 bytes, big-endian):
//   protocol version (1) | inverse protocol version (1) | payload type (2) | payload length (4)
// A receiver checks the inverse version first (a wrong pattern is NACK 0x00 and the socket is
// closed), then the type (unknown: NACK 0x01, message discarded), the size (NACK 0x02) and the
// length a type needs (NACK 0x04, socket closed): decodeHeader/decodePayload say which.
import { pksError, type ErrorCode } from '../errors.js';

export const DOIP_HEADER_LEN = 8;
/** ISO 13400-2:2019; 0x02 (2012) is accepted from peers, 0xFF only in vehicle identification requests. */
export const DOIP_VERSION = 0x03;
export const DOIP_VERSION_2012 = 0x02;
export const DOIP_VERSION_DEFAULT = 0xff;
export const DOIP_TCP_PORT = 13400;
export const DOIP_UDP_PORT = 13400;
export const DOIP_TLS_PORT = 3496;

export const PT = Object.freeze({
  GENERIC_NACK: 0x0000,
  VEHICLE_ID_REQ: 0x0001,
  VEHICLE_ID_REQ_EID: 0x0002,
  VEHICLE_ID_REQ_VIN: 0x0003,
  VEHICLE_ANNOUNCEMENT: 0x0004,
  ROUTING_ACTIVATION_REQ: 0x0005,
  ROUTING_ACTIVATION_RES: 0x0006,
  ALIVE_CHECK_REQ: 0x0007,
  ALIVE_CHECK_RES: 0x0008,
  ENTITY_STATUS_REQ: 0x4001,
  ENTITY_STATUS_RES: 0x4002,
  POWER_MODE_REQ: 0x4003,
  POWER_MODE_RES: 0x4004,
  DIAG_MESSAGE: 0x8001,
  DIAG_ACK: 0x8002,
  DIAG_NACK: 0x8003,
});
export type PayloadType = (typeof PT)[keyof typeof PT];

/** Generic DoIP header NACK codes (Table 19). */
export const HEADER_NACK = Object.freeze({ INCORRECT_PATTERN: 0x00, UNKNOWN_TYPE: 0x01, TOO_LARGE: 0x02, OUT_OF_MEMORY: 0x03, INVALID_LENGTH: 0x04 });
/** Diagnostic message NACK codes (Table 30). */
export const DIAG_NACK = Object.freeze({ INVALID_SA: 0x02, UNKNOWN_TA: 0x03, TOO_LARGE: 0x04, OUT_OF_MEMORY: 0x05, TARGET_UNREACHABLE: 0x06, UNKNOWN_NETWORK: 0x07, TP_ERROR: 0x08 });
/** Routing activation response codes (Table 25). */
export const ROUTING = Object.freeze({
  UNKNOWN_SA: 0x00,
  NO_FREE_SOCKET: 0x01,
  SA_MISMATCH: 0x02,
  SA_IN_USE: 0x03,
  MISSING_AUTH: 0x04,
  REJECTED_CONFIRMATION: 0x05,
  UNSUPPORTED_TYPE: 0x06,
  TLS_REQUIRED: 0x07,
  SUCCESS: 0x10,
  CONFIRMATION_REQUIRED: 0x11,
});
export const ACTIVATION_TYPE = Object.freeze({ DEFAULT: 0x00, WWH_OBD: 0x01, CENTRAL_SECURITY: 0xe1 });

export interface Header {
  version: number;
  type: number;
  length: number;
}

export interface VehicleId {
  vin: string; // 17 ASCII characters
  logicalAddress: number;
  eid: Buffer; // 6
  gid: Buffer; // 6
  furtherAction: number;
  syncStatus?: number;
}

export interface RoutingActivationReq {
  sourceAddress: number;
  activationType: number;
  oem?: Buffer; // 4
}
export interface RoutingActivationRes {
  testerAddress: number;
  entityAddress: number;
  code: number;
  oem?: Buffer;
}
export interface EntityStatus {
  nodeType: number; // 0 gateway, 1 node
  maxSockets: number;
  openSockets: number;
  maxDataSize?: number;
}
export interface DiagMessage {
  sourceAddress: number;
  targetAddress: number;
  data: Buffer;
}
export interface DiagAck {
  sourceAddress: number;
  targetAddress: number;
  code: number;
  previous: Buffer;
}

export type Message =
  | { type: typeof PT.GENERIC_NACK; code: number }
  | { type: typeof PT.VEHICLE_ID_REQ }
  | { type: typeof PT.VEHICLE_ID_REQ_EID; eid: Buffer }
  | { type: typeof PT.VEHICLE_ID_REQ_VIN; vin: string }
  | ({ type: typeof PT.VEHICLE_ANNOUNCEMENT } & VehicleId)
  | ({ type: typeof PT.ROUTING_ACTIVATION_REQ } & RoutingActivationReq)
  | ({ type: typeof PT.ROUTING_ACTIVATION_RES } & RoutingActivationRes)
  | { type: typeof PT.ALIVE_CHECK_REQ }
  | { type: typeof PT.ALIVE_CHECK_RES; sourceAddress: number }
  | { type: typeof PT.ENTITY_STATUS_REQ }
  | ({ type: typeof PT.ENTITY_STATUS_RES } & EntityStatus)
  | { type: typeof PT.POWER_MODE_REQ }
  | { type: typeof PT.POWER_MODE_RES; mode: number }
  | ({ type: typeof PT.DIAG_MESSAGE } & DiagMessage)
  | ({ type: typeof PT.DIAG_ACK } & DiagAck)
  | ({ type: typeof PT.DIAG_NACK } & DiagAck);

/** A decoding failure carries the generic NACK code the standard wants sent, and whether to close. */
export class DoipDecodeError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly nack: number,
    readonly close: boolean,
    detail: string,
  ) {
    super(`${code}: ${detail}`);
  }
  toPks() {
    return pksError(this.code, this.message.slice(this.code.length + 2));
  }
}

const KNOWN = new Set<number>(Object.values(PT));
// Fixed or allowed lengths per payload type (null: at least the minimum, checked below).
const LENGTHS: Record<number, readonly number[] | null> = {
  [PT.GENERIC_NACK]: [1],
  [PT.VEHICLE_ID_REQ]: [0],
  [PT.VEHICLE_ID_REQ_EID]: [6],
  [PT.VEHICLE_ID_REQ_VIN]: [17],
  [PT.VEHICLE_ANNOUNCEMENT]: [32, 33],
  [PT.ROUTING_ACTIVATION_REQ]: [7, 11],
  [PT.ROUTING_ACTIVATION_RES]: [9, 13],
  [PT.ALIVE_CHECK_REQ]: [0],
  [PT.ALIVE_CHECK_RES]: [2],
  [PT.ENTITY_STATUS_REQ]: [0],
  [PT.ENTITY_STATUS_RES]: [3, 7],
  [PT.POWER_MODE_REQ]: [0],
  [PT.POWER_MODE_RES]: [1],
  [PT.DIAG_MESSAGE]: null,
  [PT.DIAG_ACK]: null,
  [PT.DIAG_NACK]: null,
};
const MIN_LENGTH: Record<number, number> = { [PT.DIAG_MESSAGE]: 5, [PT.DIAG_ACK]: 5, [PT.DIAG_NACK]: 5 };

const u16 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffff;
const u8 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xff;

/** Decodes the first 8 bytes; `maxPayload` is what this side can take (NACK 0x02 beyond). */
export function decodeHeader(b: Buffer, maxPayload: number): Header {
  if (b.length < DOIP_HEADER_LEN) throw new DoipDecodeError('PKS_DOIP_HEADER', HEADER_NACK.INCORRECT_PATTERN, true, `header needs 8 bytes, got ${b.length}`);
  const version = b[0]!;
  const inverse = b[1]!;
  if ((version ^ 0xff) !== inverse || !(version === DOIP_VERSION || version === DOIP_VERSION_2012 || version === 0x01 || version === DOIP_VERSION_DEFAULT)) {
    throw new DoipDecodeError('PKS_DOIP_HEADER', HEADER_NACK.INCORRECT_PATTERN, true, `version 0x${version.toString(16)} / inverse 0x${inverse.toString(16)}`);
  }
  const type = b.readUInt16BE(2);
  const length = b.readUInt32BE(4);
  if (!KNOWN.has(type)) throw new DoipDecodeError('PKS_DOIP_UNKNOWN_TYPE', HEADER_NACK.UNKNOWN_TYPE, false, `payload type 0x${type.toString(16).padStart(4, '0')}`);
  if (length > maxPayload) throw new DoipDecodeError('PKS_DOIP_TOO_LARGE', HEADER_NACK.TOO_LARGE, false, `payload length ${length} > ${maxPayload}`);
  const allowed = LENGTHS[type];
  if (allowed ? !allowed.includes(length) : length < (MIN_LENGTH[type] ?? 0)) {
    throw new DoipDecodeError('PKS_DOIP_LENGTH', HEADER_NACK.INVALID_LENGTH, true, `payload type 0x${type.toString(16).padStart(4, '0')} with length ${length}`);
  }
  return { version, type, length };
}

/** Decodes a payload whose header decodeHeader accepted (so its length fits its type). */
export function decodePayload(h: Header, p: Buffer): Message {
  if (p.length !== h.length) throw new DoipDecodeError('PKS_DOIP_LENGTH', HEADER_NACK.INVALID_LENGTH, true, `payload has ${p.length} bytes, header says ${h.length}`);
  switch (h.type) {
    case PT.GENERIC_NACK:
      return { type: PT.GENERIC_NACK, code: p[0]! };
    case PT.VEHICLE_ID_REQ:
    case PT.ALIVE_CHECK_REQ:
    case PT.ENTITY_STATUS_REQ:
    case PT.POWER_MODE_REQ:
      return { type: h.type } as Message;
    case PT.VEHICLE_ID_REQ_EID:
      return { type: PT.VEHICLE_ID_REQ_EID, eid: Buffer.from(p) };
    case PT.VEHICLE_ID_REQ_VIN:
      return { type: PT.VEHICLE_ID_REQ_VIN, vin: p.toString('latin1') };
    case PT.VEHICLE_ANNOUNCEMENT:
      return {
        type: PT.VEHICLE_ANNOUNCEMENT,
        vin: p.subarray(0, 17).toString('latin1'),
        logicalAddress: p.readUInt16BE(17),
        eid: Buffer.from(p.subarray(19, 25)),
        gid: Buffer.from(p.subarray(25, 31)),
        furtherAction: p[31]!,
        ...(p.length === 33 ? { syncStatus: p[32]! } : {}),
      };
    case PT.ROUTING_ACTIVATION_REQ:
      return { type: PT.ROUTING_ACTIVATION_REQ, sourceAddress: p.readUInt16BE(0), activationType: p[2]!, ...(p.length === 11 ? { oem: Buffer.from(p.subarray(7, 11)) } : {}) };
    case PT.ROUTING_ACTIVATION_RES:
      return { type: PT.ROUTING_ACTIVATION_RES, testerAddress: p.readUInt16BE(0), entityAddress: p.readUInt16BE(2), code: p[4]!, ...(p.length === 13 ? { oem: Buffer.from(p.subarray(9, 13)) } : {}) };
    case PT.ALIVE_CHECK_RES:
      return { type: PT.ALIVE_CHECK_RES, sourceAddress: p.readUInt16BE(0) };
    case PT.ENTITY_STATUS_RES:
      return { type: PT.ENTITY_STATUS_RES, nodeType: p[0]!, maxSockets: p[1]!, openSockets: p[2]!, ...(p.length === 7 ? { maxDataSize: p.readUInt32BE(3) } : {}) };
    case PT.POWER_MODE_RES:
      return { type: PT.POWER_MODE_RES, mode: p[0]! };
    case PT.DIAG_MESSAGE:
      if (p.length < 5) break;
      return { type: PT.DIAG_MESSAGE, sourceAddress: p.readUInt16BE(0), targetAddress: p.readUInt16BE(2), data: Buffer.from(p.subarray(4)) };
    case PT.DIAG_ACK:
    case PT.DIAG_NACK:
      return { type: h.type, sourceAddress: p.readUInt16BE(0), targetAddress: p.readUInt16BE(2), code: p[4]!, previous: Buffer.from(p.subarray(5)) };
  }
  throw new DoipDecodeError('PKS_DOIP_LENGTH', HEADER_NACK.INVALID_LENGTH, true, `payload type 0x${h.type.toString(16)} with length ${p.length}`);
}

/** Header + payload as one Buffer. */
export function frame(type: number, payload: Buffer, version = DOIP_VERSION): Buffer {
  const b = Buffer.alloc(DOIP_HEADER_LEN + payload.length);
  b[0] = version;
  b[1] = version ^ 0xff;
  b.writeUInt16BE(type, 2);
  b.writeUInt32BE(payload.length, 4);
  payload.copy(b, DOIP_HEADER_LEN);
  return b;
}

function need(ok: boolean, what: string): void {
  if (!ok) throw pksError('PKS_OUT_OF_RANGE', `DoIP ${what}`);
}

/** Encodes a message (fields validated: a bad field is PKS_OUT_OF_RANGE, never a wrong byte). */
export function encode(m: Message, version = DOIP_VERSION): Buffer {
  const fixed = (n: number): Buffer => Buffer.alloc(n);
  let p: Buffer;
  switch (m.type) {
    case PT.GENERIC_NACK:
      need(u8(m.code), 'NACK code');
      p = Buffer.from([m.code]);
      break;
    case PT.VEHICLE_ID_REQ:
    case PT.ALIVE_CHECK_REQ:
    case PT.ENTITY_STATUS_REQ:
    case PT.POWER_MODE_REQ:
      p = fixed(0);
      break;
    case PT.VEHICLE_ID_REQ_EID:
      need(m.eid.length === 6, 'EID must be 6 bytes');
      p = Buffer.from(m.eid);
      break;
    case PT.VEHICLE_ID_REQ_VIN:
      need(/^[\x20-\x7e]{17}$/.test(m.vin), 'VIN must be 17 printable characters');
      p = Buffer.from(m.vin, 'latin1');
      break;
    case PT.VEHICLE_ANNOUNCEMENT:
      need(/^[\x20-\x7e]{17}$/.test(m.vin), 'VIN must be 17 printable characters');
      need(u16(m.logicalAddress) && m.eid.length === 6 && m.gid.length === 6 && u8(m.furtherAction), 'vehicle announcement fields');
      p = fixed(m.syncStatus === undefined ? 32 : 33);
      p.write(m.vin, 0, 'latin1');
      p.writeUInt16BE(m.logicalAddress, 17);
      m.eid.copy(p, 19);
      m.gid.copy(p, 25);
      p[31] = m.furtherAction;
      if (m.syncStatus !== undefined) p[32] = m.syncStatus;
      break;
    case PT.ROUTING_ACTIVATION_REQ:
      need(u16(m.sourceAddress) && u8(m.activationType) && (!m.oem || m.oem.length === 4), 'routing activation request fields');
      p = fixed(m.oem ? 11 : 7);
      p.writeUInt16BE(m.sourceAddress, 0);
      p[2] = m.activationType;
      m.oem?.copy(p, 7);
      break;
    case PT.ROUTING_ACTIVATION_RES:
      need(u16(m.testerAddress) && u16(m.entityAddress) && u8(m.code) && (!m.oem || m.oem.length === 4), 'routing activation response fields');
      p = fixed(m.oem ? 13 : 9);
      p.writeUInt16BE(m.testerAddress, 0);
      p.writeUInt16BE(m.entityAddress, 2);
      p[4] = m.code;
      m.oem?.copy(p, 9);
      break;
    case PT.ALIVE_CHECK_RES:
      need(u16(m.sourceAddress), 'alive check source address');
      p = fixed(2);
      p.writeUInt16BE(m.sourceAddress, 0);
      break;
    case PT.ENTITY_STATUS_RES:
      need(u8(m.nodeType) && u8(m.maxSockets) && u8(m.openSockets), 'entity status fields');
      p = fixed(m.maxDataSize === undefined ? 3 : 7);
      p[0] = m.nodeType;
      p[1] = m.maxSockets;
      p[2] = m.openSockets;
      if (m.maxDataSize !== undefined) p.writeUInt32BE(m.maxDataSize, 3);
      break;
    case PT.POWER_MODE_RES:
      need(u8(m.mode), 'power mode');
      p = Buffer.from([m.mode]);
      break;
    case PT.DIAG_MESSAGE:
      need(u16(m.sourceAddress) && u16(m.targetAddress) && m.data.length >= 1, 'diagnostic message fields');
      p = fixed(4 + m.data.length);
      p.writeUInt16BE(m.sourceAddress, 0);
      p.writeUInt16BE(m.targetAddress, 2);
      m.data.copy(p, 4);
      break;
    case PT.DIAG_ACK:
    case PT.DIAG_NACK:
      need(u16(m.sourceAddress) && u16(m.targetAddress) && u8(m.code), 'diagnostic ACK fields');
      p = fixed(5 + m.previous.length);
      p.writeUInt16BE(m.sourceAddress, 0);
      p.writeUInt16BE(m.targetAddress, 2);
      p[4] = m.code;
      m.previous.copy(p, 5);
      break;
    default:
      throw pksError('PKS_OUT_OF_RANGE', 'DoIP: unknown message type');
  }
  return frame(m.type, p, version);
}

/**
 * Splits a TCP byte stream into DoIP messages. It holds at most one header plus `maxPayload`
 * bytes; a message it must refuse is reported (with the NACK the standard asks for) and, when the
 * standard lets the connection live, its payload is skipped without being buffered.
 */
export class DoipStream {
  private buf: Buffer = Buffer.alloc(0);
  private skip = 0;
  private header: Header | undefined;
  dead = false;

  constructor(
    private readonly maxPayload: number,
    private readonly on: { message(m: Message, version: number): void; error(e: DoipDecodeError): void },
  ) {}

  push(chunk: Buffer): void {
    if (this.dead) return;
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      chunk = chunk.subarray(n);
    }
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    while (!this.dead) {
      if (!this.header) {
        if (this.buf.length < DOIP_HEADER_LEN) return;
        try {
          this.header = decodeHeader(this.buf, this.maxPayload);
        } catch (e) {
          const err = e as DoipDecodeError;
          this.on.error(err);
          if (err.close) {
            this.dead = true;
            this.buf = Buffer.alloc(0);
            return;
          }
          // discard this message: its payload length is still trustworthy (the pattern was right)
          const len = this.buf.readUInt32BE(4);
          const have = this.buf.length - DOIP_HEADER_LEN;
          if (have >= len) this.buf = this.buf.subarray(DOIP_HEADER_LEN + len);
          else {
            this.skip = len - have;
            this.buf = Buffer.alloc(0);
            return;
          }
          continue;
        }
      }
      const h = this.header;
      if (this.buf.length < DOIP_HEADER_LEN + h.length) return;
      const payload = this.buf.subarray(DOIP_HEADER_LEN, DOIP_HEADER_LEN + h.length);
      this.buf = this.buf.subarray(DOIP_HEADER_LEN + h.length);
      this.header = undefined;
      let m: Message;
      try {
        m = decodePayload(h, payload);
      } catch (e) {
        this.on.error(e as DoipDecodeError);
        this.dead = true;
        return;
      }
      this.on.message(m, h.version);
    }
  }
}
