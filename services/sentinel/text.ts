// Text that ends up in mail headers or bodies comes from names we do not control (certificate
// labels, pool names, tester ids, config). A CR or LF in a header value would let it start a
// new header (Bcc: ...), so everything bound for a header goes through headerSafe, and
// addresses are checked against a strict shape instead of being parsed leniently.

// C0 and C1 controls, DEL, and the Unicode line/paragraph separators some MUAs split on.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
const CONTROL_BUT_NEWLINE = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/g;

/** One line, no control characters, collapsed spaces, at most `max` characters. */
export function headerSafe(value: unknown, max = 200): string {
  const s = String(value ?? '')
    .replace(CONTROL, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** Body text: newlines kept (CRLF and CR become LF), other controls dropped, length capped. */
export function bodySafe(value: unknown, max = 4000): string {
  const s = String(value ?? '')
    .replace(/\r\n?/g, '\n')
    .replace(CONTROL_BUT_NEWLINE, ' ');
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

// Deliberately narrower than RFC 5321: plain local@domain, no quoting, no comments, no
// display names, so nothing an address carries can be read as header syntax.
const ADDRESS = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

export function isMailAddress(value: unknown): value is string {
  return typeof value === 'string' && value.length <= 254 && ADDRESS.test(value) && !value.includes('..');
}

/** A name safe to print and to use inside an alert key: no controls, trimmed, capped. */
export function safeName(value: unknown, max = 128): string {
  return headerSafe(value, max);
}
