// Every error of the tester API is an RFC 9457 problem with a PKS code that never echoes the
// input (issue 9, item 9), tried with raw TLS sockets as an attacker would: bad URL encoding,
// an over-long path parameter, 20 KB headers and URLs, malformed HTTP (garbage, CL+TE,
// duplicate or negative Content-Length, NUL in the path, LF-only lines), no Host, a slow
// request. A body that is not JSON is answered and the connection stays open.
import tls from 'node:tls';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { POOL_A, startRig, type Rig } from './fixture.js';

const test = suite<{ rig: Rig }>('http-errors');

test.before(async (ctx) => {
  ctx.rig = await startRig({ http: { requestTimeoutSeconds: 1, headersTimeoutSeconds: 1 } });
});
test.after(async (ctx) => {
  await ctx.rig?.close();
});

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Connects as alice, writes the bytes (chunks with pauses if given), collects until close or `until` responses. */
async function raw(rig: Rig, data: string | Buffer | Array<string | number>, o: { until?: number; ms?: number } = {}): Promise<{ responses: RawResponse[]; closed: boolean; text: string }> {
  const cred = rig.pki.testers.alice!;
  const sock = tls.connect({ host: '127.0.0.1', port: rig.port, servername: 'localhost', ca: rig.pki.boxCa, cert: cred.cert, key: cred.key });
  await new Promise<void>((resolve, reject) => {
    sock.once('secureConnect', () => resolve());
    sock.once('error', reject);
  });
  let buf = Buffer.alloc(0);
  let closed = false;
  sock.on('data', (d: Buffer) => (buf = Buffer.concat([buf, d])));
  sock.on('error', () => undefined);
  const ended = new Promise<void>((r) => sock.once('close', () => ((closed = true), r())));
  const parts = Array.isArray(data) ? data : [data];
  for (const p of parts) {
    if (typeof p === 'number') await new Promise((r) => setTimeout(r, p));
    else if (!sock.destroyed) sock.write(p);
  }
  const deadline = Date.now() + (o.ms ?? 4000);
  const parse = (): RawResponse[] => {
    const out: RawResponse[] = [];
    let rest = buf.toString('latin1');
    for (;;) {
      const end = rest.indexOf('\r\n\r\n');
      if (end < 0) break;
      const [line, ...hs] = rest.slice(0, end).split('\r\n');
      const headers: Record<string, string> = {};
      for (const h of hs) headers[h.slice(0, h.indexOf(':')).toLowerCase()] = h.slice(h.indexOf(':') + 1).trim();
      const len = Number(headers['content-length'] ?? 0);
      if (rest.length < end + 4 + len) break;
      out.push({ status: Number(line!.split(' ')[1]), headers, body: rest.slice(end + 4, end + 4 + len) });
      rest = rest.slice(end + 4 + len);
    }
    return out;
  };
  while (Date.now() < deadline && !closed && parse().length < (o.until ?? Infinity)) await new Promise((r) => setTimeout(r, 20));
  const responses = parse();
  sock.destroy();
  await ended;
  return { responses, closed: closed && responses.length < (o.until ?? Infinity) ? true : closed, text: buf.toString('latin1') };
}

/** The one response must be a problem with `code` and `status`, and must not contain `echo`. */
function problem(r: { responses: RawResponse[]; text: string }, status: number, code: string, echo?: string): void {
  assert.ok(r.responses.length >= 1, `no HTTP response: ${JSON.stringify(r.text.slice(0, 200))}`);
  const res = r.responses[0]!;
  assert.is(res.status, status, r.text.slice(0, 300));
  assert.match(res.headers['content-type'] ?? '', /^application\/problem\+json/);
  const body = JSON.parse(res.body) as { code: string; status: number; type: string };
  assert.is(body.code, code);
  assert.is(body.status, status);
  assert.ok(body.type.startsWith('urn:pks:error:'));
  if (echo) assert.not.ok(r.text.includes(echo), `the input ${JSON.stringify(echo.slice(0, 40))} is echoed`);
}

const get = (target: string, extra = '') => `GET ${target} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`;

test('bad URL encoding is a coded 400', async ({ rig }) => {
  problem(await raw(rig, `POST /v1/she/packages/%ff/confirm HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`, { until: 1 }), 400, 'PKS_BAD_REQUEST', '%ff');
});

test('a 129-character package id is a coded 414 without the path', async ({ rig }) => {
  const id = 'p'.repeat(129);
  problem(await raw(rig, `POST /v1/she/packages/${id}/confirm HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`, { until: 1 }), 414, 'PKS_URI_TOO_LONG', id);
});

test('20 KB of headers or of URL is a coded 431', async ({ rig }) => {
  const big = 'x'.repeat(20 * 1024);
  problem(await raw(rig, get('/v1/health', `X-Junk: ${big}\r\n`)), 431, 'PKS_HEADERS_TOO_LARGE', big.slice(0, 100));
  problem(await raw(rig, get(`/v1/health?${big}`)), 431, 'PKS_HEADERS_TOO_LARGE', big.slice(0, 100));
});

test('malformed HTTP: garbage, CL+TE, duplicate and negative Content-Length, NUL in the path, LF-only', async ({ rig }) => {
  const cases: Array<[string, string]> = [
    ['garbage', '\x16\x03junk junk junk\r\n\r\n'],
    ['cl+te', `POST /v1/she/packages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`],
    ['dup-cl', `POST /v1/she/packages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`],
    ['neg-cl', `POST /v1/she/packages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n{}`],
    ['nul', `GET /v1/he\x00alth HTTP/1.1\r\nHost: localhost\r\n\r\n`],
    ['lf-only', `GET /v1/health HTTP/1.1\nHost: localhost\n\n`],
  ];
  for (const [name, bytes] of cases) {
    const r = await raw(rig, bytes);
    try {
      problem(r, 400, 'PKS_HTTP_MALFORMED');
    } catch (e) {
      throw new Error(`${name}: ${(e as Error).message}`);
    }
  }
});

test('a request without Host is a coded 400', async ({ rig }) => {
  problem(await raw(rig, `GET /v1/health HTTP/1.1\r\n\r\n`, { until: 1 }), 400, 'PKS_BAD_REQUEST');
});

test('a slow request is a coded 408', async ({ rig }) => {
  const r = await raw(rig, ['GET /v1/health HTTP/1.1\r\nHost: local', 2500, 'host\r\n\r\n'], { ms: 4000 });
  problem(r, 408, 'PKS_REQUEST_TIMEOUT');
});

test('a body that is not JSON is a coded 400 and the connection stays open', async ({ rig }) => {
  const body = '{"pool": "' + POOL_A + '", uid: nope';
  const bad = `POST /v1/she/packages HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const r = await raw(rig, [bad, 100, get('/v1/health')], { until: 2 });
  problem(r, 400, 'PKS_BAD_REQUEST', 'nope');
  assert.is(r.responses.length, 2, `the connection closed after the bad body: ${r.text.slice(0, 400)}`);
  assert.is(r.responses[1]!.status, 200);
});

test('problems never echo the path in `instance`', async ({ rig }) => {
  const r = await raw(rig, `POST /v1/she/packages/secret-looking-id/confirm HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`, { until: 1 });
  assert.is(r.responses[0]!.status, 400);
  assert.not.ok(r.text.includes('secret-looking-id'), 'the path is echoed');
});

test.run();
