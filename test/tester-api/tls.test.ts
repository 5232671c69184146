// The TLS front: who gets through the handshake, keep-alive, session resumption and the
// per-source handshake limit, with node's own TLS client.
import tls from 'node:tls';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { call, startRig, type Rig } from './fixture.js';

const test = suite<{ rig: Rig }>('tester-api: TLS');

test.before(async (ctx) => {
  ctx.rig = await startRig();
});
test.after(async (ctx) => {
  await ctx.rig?.close();
});

interface Outcome {
  ok: boolean;
  error?: string;
  status?: number;
  body?: string;
  reused?: boolean;
  protocol?: string | null;
  session?: Buffer;
}

/** One TLS connection doing GET /v1/health (if the handshake passes), then closing. */
function probe(port: number, o: tls.ConnectionOptions & { tester?: { cert: string; key: string } }): Promise<Outcome> {
  return new Promise((resolve) => {
    let session: Buffer | undefined;
    let data = '';
    let done = false;
    const finish = (v: Outcome): void => {
      if (done) return;
      done = true;
      sock.destroy();
      resolve({ ...v, ...(session ? { session } : {}) });
    };
    const sock = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...(o.tester ?? {}), ...o });
    sock.on('session', (s: Buffer) => {
      session = s;
    });
    let reused: boolean | undefined;
    let protocol: string | null | undefined;
    const answer = (): Outcome => ({ ok: data.startsWith('HTTP/1.1 200'), ...(data ? { status: Number(data.slice(9, 12)) } : {}), body: data.split('\r\n\r\n')[1] ?? '', reused, protocol });
    sock.once('secureConnect', () => {
      reused = sock.isSessionReused();
      protocol = sock.getProtocol();
      sock.write('GET /v1/health HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
      sock.on('data', (b: Buffer) => {
        data += b.toString();
      });
      sock.once('end', () => {
        // give a TLS 1.3 ticket that arrives late a moment to be delivered
        if (data) setTimeout(() => finish(answer()), 20);
      });
    });
    sock.once('error', (e: NodeJS.ErrnoException) => finish({ ...answer(), ok: false, error: e.code ?? e.message }));
    sock.once('close', () => setTimeout(() => finish(data ? answer() : { ok: false, error: 'closed' }), 50));
  });
}

test('a tester certificate from the tester CA gets in (TLS 1.3 and 1.2)', async ({ rig }) => {
  const t = rig.pki.testers.alice!;
  const r13 = await probe(rig.port, { ca: rig.pki.boxCa, tester: t });
  assert.ok(r13.ok, JSON.stringify(r13));
  assert.is(r13.protocol, 'TLSv1.3');
  const r12 = await probe(rig.port, { ca: rig.pki.boxCa, tester: t, maxVersion: 'TLSv1.2' });
  assert.ok(r12.ok, JSON.stringify(r12));
  assert.is(r12.protocol, 'TLSv1.2');
});

test('no client certificate, a foreign CA, an expired certificate, TLS 1.1: refused', async ({ rig }) => {
  const before = rig.api.metrics.handshakeFailures;
  const none = await probe(rig.port, { ca: rig.pki.boxCa });
  assert.not.ok(none.ok, 'no certificate');
  assert.is(none.status, undefined, 'no HTTP answer without a certificate');
  assert.match(String(none.error), /CERTIFICATE_REQUIRED|ALERT|ECONNRESET|closed/, String(none.error));
  const foreign = await probe(rig.port, { ca: rig.pki.boxCa, tester: rig.pki.testers.foreign! });
  assert.not.ok(foreign.ok, 'foreign CA');
  assert.is(foreign.status, undefined);
  const stale = await probe(rig.port, { ca: rig.pki.boxCa, tester: rig.pki.testers.stale! });
  assert.not.ok(stale.ok, 'expired certificate');
  assert.is(stale.status, undefined);
  const old = await probe(rig.port, {
    ca: rig.pki.boxCa,
    tester: rig.pki.testers.alice!,
    minVersion: 'TLSv1',
    maxVersion: 'TLSv1.1',
    ciphers: 'DEFAULT@SECLEVEL=0',
  });
  assert.not.ok(old.ok, 'TLS 1.1');
  assert.is(old.status, undefined);
  assert.ok(rig.api.metrics.handshakeFailures - before >= 3, `handshake failures counted: ${rig.api.metrics.handshakeFailures - before}`);
});

test('keep-alive: many requests, one connection', async ({ rig }) => {
  let conns = 0;
  const count = (): void => {
    conns++;
  };
  rig.api.server.on('secureConnection', count);
  try {
    const c = rig.client('alice');
    for (let i = 0; i < 20; i++) assert.is((await call(c, 'GET', '/v1/history?limit=1')).status, 200);
    assert.is(conns, 1);
  } finally {
    rig.api.server.off('secureConnection', count);
  }
});

test('session resumption: the second connection resumes the first one session', async ({ rig }) => {
  for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
    const t = rig.pki.testers.alice!;
    const first = await probe(rig.port, { ca: rig.pki.boxCa, tester: t, maxVersion });
    assert.ok(first.ok && first.session, `${maxVersion} first: ${JSON.stringify({ ...first, session: !!first.session })}`);
    assert.is(first.reused, false);
    const second = await probe(rig.port, { ca: rig.pki.boxCa, tester: t, maxVersion, session: first.session! });
    assert.ok(second.ok, `${maxVersion} second: ${JSON.stringify({ ...second, session: undefined })}`);
    assert.is(second.reused, true, `${maxVersion} resumed`);
    // a resumed session still knows who the tester is
    const again = await probe(rig.port, { ca: rig.pki.boxCa, tester: t, maxVersion, session: second.session ?? first.session! });
    assert.ok(again.ok);
  }
});

test('handshake rate limit per source address trips and counts', async () => {
  const rig = await startRig({ limits: { handshakesPerWindow: 3, handshakeWindowSeconds: 60 } });
  try {
    const t = rig.pki.testers.alice!;
    const results: Outcome[] = [];
    for (let i = 0; i < 5; i++) results.push(await probe(rig.port, { ca: rig.pki.boxCa, tester: t }));
    assert.equal(
      results.map((r) => r.ok),
      [true, true, true, false, false],
      JSON.stringify(results.map((r) => ({ ...r, session: undefined }))),
    );
    assert.is(rig.api.metrics.handshakesLimited, 2);
  } finally {
    await rig.close();
  }
});

test.run();
