// The tester API's answers to what never becomes a request: bytes node's HTTP parser refuses
// (garbage, CL+TE, duplicate or negative Content-Length, NUL or bare LF), headers or a URL over
// the size limit, a request that does not arrive in time, and fastify's framework errors (bad
// URL encoding, an over-long path parameter). Each is an RFC 9457 problem with our code and a
// fixed detail: nothing of the input is echoed back, and the connection is closed only where
// HTTP framing is lost (a parser error leaves no way to find the next request).
import type { Duplex } from 'node:stream';
import { PksError, pksError, problem } from '../../appliance/errors.js';

/** The problem for a node HTTP parser / server error code. */
export function clientErrorProblem(code: string | undefined): PksError {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return pksError('PKS_HEADERS_TOO_LARGE', 'request line and headers are over the size limit');
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'ERR_HTTP_HEADERS_TIMEOUT':
      return pksError('PKS_REQUEST_TIMEOUT', 'the request did not arrive in time');
    default:
      return pksError('PKS_HTTP_MALFORMED', 'request is not valid HTTP/1.1');
  }
}

/** The problem for a fastify framework error (before any route runs). */
export function frameworkProblem(code: string | undefined): PksError {
  if (code === 'FST_ERR_MAX_PARAM_LENGTH') return pksError('PKS_URI_TOO_LONG', 'a path parameter is over 128 characters');
  if (code === 'FST_ERR_BAD_URL') return pksError('PKS_BAD_REQUEST', 'the path is not valid URL encoding');
  return pksError('PKS_BAD_REQUEST', 'request is malformed');
}

const REASON: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 414: 'URI Too Long', 431: 'Request Header Fields Too Large', 503: 'Service Unavailable' };

/** A complete HTTP/1.1 response carrying the problem, with Connection: close. */
export function rawProblemResponse(e: PksError): string {
  const body = JSON.stringify(problem(e));
  return [
    `HTTP/1.1 ${e.status} ${REASON[e.status] ?? 'Error'}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    '',
    body,
  ].join('\r\n');
}

/**
 * fastify `clientErrorHandler`: answers the problem if nothing of a response is on the wire
 * yet, then closes (node has given up on this connection's framing).
 */
export function makeClientErrorHandler(count: (e: PksError) => void): (err: Error & { code?: string }, socket: Duplex) => void {
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const e = clientErrorProblem(err.code);
    count(e);
    socket.end(rawProblemResponse(e));
    // a peer that never reads must not keep the socket: gone after a short grace
    setTimeout(() => socket.destroy(), 2000).unref();
  };
}
