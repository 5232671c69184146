// UDS (ISO 14229-1:2020) as key programming needs it: service ids, negative response codes,
// and the byte layouts of the services we send, shared by the client, the ECU simulator and
// the fuzzers. No I/O here.
import { PksError, pksError } from '../errors.js';

export const SID = Object.freeze({
  DiagnosticSessionControl: 0x10,
  ECUReset: 0x11,
  ReadDataByIdentifier: 0x22,
  SecurityAccess: 0x27,
  Authentication: 0x29,
  WriteDataByIdentifier: 0x2e,
  RoutineControl: 0x31,
  TesterPresent: 0x3e,
});
export const NEGATIVE = 0x7f;
export const POSITIVE_OFFSET = 0x40;
/** sub-function bit 7: suppress the positive response */
export const SUPPRESS = 0x80;

export const SESSION = Object.freeze({ DEFAULT: 0x01, PROGRAMMING: 0x02, EXTENDED: 0x03 });
export const RESET = Object.freeze({ HARD: 0x01, KEY_OFF_ON: 0x02, SOFT: 0x03 });
export const ROUTINE = Object.freeze({ START: 0x01, STOP: 0x02, RESULTS: 0x03 });

/** Negative response codes (ISO 14229-1 Annex A.1). */
export const NRC = Object.freeze({
  generalReject: 0x10,
  serviceNotSupported: 0x11,
  subFunctionNotSupported: 0x12,
  incorrectMessageLengthOrInvalidFormat: 0x13,
  responseTooLong: 0x14,
  busyRepeatRequest: 0x21,
  conditionsNotCorrect: 0x22,
  requestSequenceError: 0x24,
  requestOutOfRange: 0x31,
  securityAccessDenied: 0x33,
  authenticationRequired: 0x34,
  invalidKey: 0x35,
  exceedNumberOfAttempts: 0x36,
  requiredTimeDelayNotExpired: 0x37,
  generalProgrammingFailure: 0x72,
  requestCorrectlyReceivedResponsePending: 0x78,
  subFunctionNotSupportedInActiveSession: 0x7e,
  serviceNotSupportedInActiveSession: 0x7f,
});
const NRC_NAME = new Map<number, string>(Object.entries(NRC).map(([k, v]) => [v, k]));
export const nrcName = (n: number): string => NRC_NAME.get(n) ?? `nrc 0x${n.toString(16).padStart(2, '0')}`;

/** A negative response: PKS_UDS_NEGATIVE carrying the service and NRC for callers to match on. */
export class UdsNegative extends PksError {
  constructor(
    readonly sid: number,
    readonly nrc: number,
  ) {
    super('PKS_UDS_NEGATIVE', `service 0x${sid.toString(16).padStart(2, '0')}: ${nrcName(nrc)} (0x${nrc.toString(16).padStart(2, '0')})`);
  }
}

export const negative = (sid: number, nrc: number): Buffer => Buffer.from([NEGATIVE, sid, nrc]);

export const u16be = (n: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n, 0);
  return b;
};

/** Checks that `res` answers `req` positively with at least `min` bytes, and returns it. */
export function expectPositive(req: Buffer, res: Buffer, min: number): Buffer {
  if (res.length >= 3 && res[0] === NEGATIVE) {
    if (res[1] !== req[0]) throw pksError('PKS_UDS_PROTOCOL', `negative response for service 0x${res[1]!.toString(16)} while waiting for 0x${req[0]!.toString(16)}`);
    throw new UdsNegative(res[1]!, res[2]!);
  }
  if (res.length < min || res[0] !== req[0]! + POSITIVE_OFFSET) {
    throw pksError('PKS_UDS_PROTOCOL', `answer to service 0x${req[0]!.toString(16)}: ${res.length} bytes starting 0x${(res[0] ?? 0).toString(16)}`);
  }
  return res;
}
