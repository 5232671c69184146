// PKCS#11 return values to our coded errors. Details carry the operation and the CKR name only:
// never arguments (a PIN, key bytes), never the native stack.
import { isPksError, pksError, type ErrorCode, type PksError } from '../../appliance/errors.js';

/** The CKR_* name of a pkcs11js error, or undefined when it is not a PKCS#11 return value. */
export function ckrName(e: unknown): string | undefined {
  if (!(e instanceof Error) || isPksError(e)) return undefined;
  const m = /\b(CKR_[A-Z0-9_]+)\b/.exec(e.message);
  return m?.[1];
}

const LOGIN = new Set([
  'CKR_PIN_INCORRECT',
  'CKR_PIN_INVALID',
  'CKR_PIN_LEN_RANGE',
  'CKR_PIN_EXPIRED',
  'CKR_PIN_LOCKED',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_USER_PIN_NOT_INITIALIZED',
  'CKR_USER_TYPE_INVALID',
]);

const TOKEN = new Set(['CKR_TOKEN_NOT_PRESENT', 'CKR_TOKEN_NOT_RECOGNIZED', 'CKR_SLOT_ID_INVALID']);

const KEY_GONE = new Set(['CKR_OBJECT_HANDLE_INVALID', 'CKR_KEY_HANDLE_INVALID']);

/**
 * Return values after which the session (or the whole module) must be opened again: the token
 * went away, the HSM restarted, or someone logged us out. One re-open is worth trying.
 */
const SESSION_LOST = new Set([
  'CKR_SESSION_HANDLE_INVALID',
  'CKR_SESSION_CLOSED',
  'CKR_DEVICE_REMOVED',
  'CKR_DEVICE_ERROR',
  'CKR_TOKEN_NOT_PRESENT',
  'CKR_USER_NOT_LOGGED_IN',
  'CKR_CRYPTOKI_NOT_INITIALIZED',
]);

export const isSessionLost = (e: unknown): boolean => SESSION_LOST.has(ckrName(e) ?? '');
export const isKeyGone = (e: unknown): boolean => KEY_GONE.has(ckrName(e) ?? '');

export function codeFor(ckr: string | undefined): ErrorCode {
  if (ckr === undefined) return 'PKS_HSM_FAILURE';
  if (LOGIN.has(ckr)) return 'PKS_HSM_LOGIN';
  if (TOKEN.has(ckr)) return 'PKS_HSM_TOKEN';
  if (KEY_GONE.has(ckr)) return 'PKS_HSM_KEY_MISSING';
  return 'PKS_HSM_FAILURE';
}

/** Anything thrown by a PKCS#11 call, as a PksError; PksErrors pass through unchanged. */
export function mapP11Error(e: unknown, op: string, code?: ErrorCode): PksError {
  if (isPksError(e)) return e;
  const ckr = ckrName(e);
  return pksError(code ?? codeFor(ckr), `${op}: ${ckr ?? 'native error'}`, e);
}
