// JSON text from outside (MQTT messages, signed payloads, files, arguments) parsed in one place,
// so a bad input is always a coded refusal of the caller's choosing: JSON.parse throws a
// SyntaxError (or, on absurd input, a RangeError) that would otherwise escape as PKS_INTERNAL
// or, worse, as an uncaught non-coded error.
// The parse error is not kept as the cause: V8's message quotes the input, which may hold a
// sealed key or a token, and a cause ends up in logs.
// What JSON.parse builds is inert: a "__proto__" key becomes an own data property (it does not
// set the prototype), no code runs. The result is `unknown` for the caller's schema to check.
import { pksError, type ErrorCode } from './errors.js';

/**
 * Parses `text` (a string, or a Buffer read as UTF-8) or throws pksError(code, '<what> is not
 * JSON'). With `maxLength`, an input longer than that (bytes of a Buffer, UTF-16 units of a
 * string) is refused as '<what> is too large' before any decoding or parsing.
 */
export function parseJsonOr(code: ErrorCode, what: string, text: string | Buffer, maxLength?: number): unknown {
  // a non-string would be coerced by JSON.parse (123 → 123, ['1'] → 1): refused, whatever the static type said
  if (typeof text !== 'string' && !Buffer.isBuffer(text)) throw pksError(code, `${what} is not JSON`);
  if (maxLength !== undefined && text.length > maxLength) throw pksError(code, `${what} is too large`);
  try {
    // decoding inside the try: a Buffer too large for one string is refused the same way
    return JSON.parse(typeof text === 'string' ? text : text.toString('utf8')) as unknown;
  } catch {
    throw pksError(code, `${what} is not JSON`);
  }
}
