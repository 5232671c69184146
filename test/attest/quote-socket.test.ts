// Issue 12: the uplink's TPM quotes through pks-quote.socket. The uplink has no TPM device; it
// runs quote-client, which asks one instance of quote-socket (as systemd's Accept=yes starts it:
// the connection on stdin/stdout) to run exactly one of quote-cli's three forms. Here a unix
// socket server of the test stands in for systemd's socket unit and starts the real
// quote-socket per connection, against swtpm with an EK certificate.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPksError } from '../../appliance/errors.js';
import { checkQuoteRequest } from '../../services/attest/quote-socket.js';
import { startSwtpm, type Swtpm } from './swtpm.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let tpm: Swtpm | undefined;
let dir = '';
let server: Server | undefined;
let sock = '';
let instances = 0;

test.before(async () => {
  tpm = await startSwtpm({ ekCert: true });
  dir = await mkdtemp(path.join(os.tmpdir(), 'pks-quote-'));
  sock = path.join(dir, 'quote.sock');
  // what pks-quote.socket does: one instance per connection, the connection as stdin and stdout
  server = createServer((c) => {
    instances++;
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, 'services/attest/quote-socket.ts')], {
      cwd: root,
      env: { ...process.env, PKS_TPM_TCTI: tpm!.tcti, PKS_EVENT_LOG: path.join(root, 'test/attest/fixtures/ovmf-uki-eventlog.bin') },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    c.pipe(child.stdin);
    child.stdout.pipe(c);
    c.on('error', () => child.kill());
  });
  await new Promise<void>((r) => server!.listen(sock, r));
});

test.after(async () => {
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  await tpm?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const client = (...args: string[]): Promise<{ code: number; out: Record<string, unknown> }> =>
  new Promise((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'services/attest/quote-client.ts'), ...args], { cwd: root, env: { ...process.env, PKS_QUOTE_SOCKET: sock }, timeout: 120_000 }, (err, stdout) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: JSON.parse(String(stdout).trim().split('\n').pop() || '{}') as Record<string, unknown> }),
    ),
  );

test('only the three request forms pass; anything else is PKS_BAD_REQUEST before the TPM', () => {
  const nonce = 'ab'.repeat(32);
  assert.equal(checkQuoteRequest('{"args":["enroll"]}'), ['enroll']);
  assert.equal(checkQuoteRequest(JSON.stringify({ args: ['quote', '--nonce', nonce] })), ['quote', '--nonce', nonce]);
  assert.equal(checkQuoteRequest('{"args":["activate","--credential","QUJD"]}'), ['activate', '--credential', 'QUJD']);
  for (const bad of [
    'not json',
    '{}',
    '{"args":"enroll"}',
    '{"args":["enroll","--tcti","swtpm:host=10.0.0.1,port=1"]}',
    '{"args":["quote","--nonce","ab"]}',
    `{"args":["quote","--nonce","${nonce.toUpperCase()}"]}`,
    `{"args":["quote","--nonce","${nonce}","--extra"]}`,
    '{"args":["activate","--credential","not base64!"]}',
    '{"args":["seal","--in","/etc/shadow"]}',
    '{"args":["enroll"],"more":1}',
    '{"args":[1]}',
  ]) {
    try {
      checkQuoteRequest(bad);
      assert.unreachable(`accepted: ${bad}`);
    } catch (e) {
      assert.ok(isPksError(e) && e.code === 'PKS_BAD_REQUEST', `${bad}: ${String(e)}`);
    }
  }
});

test('through the socket: enroll gives the EK certificate and AK, a quote is over the asked nonce; a bad request gets a coded answer', async () => {
  const e = await client('enroll');
  assert.is(e.code, 0, JSON.stringify(e.out));
  assert.ok(typeof e.out.ekCert === 'string' && typeof e.out.akPublic === 'string' && /^[0-9a-f]{64}$/.test(String(e.out.pcr15)));
  const nonce = randomBytes(32);
  const q = await client('quote', '--nonce', nonce.toString('hex'));
  assert.is(q.code, 0, JSON.stringify(q.out));
  // TPMS_ATTEST: magic, type, qualifiedSigner (TPM2B), extraData (TPM2B) = our nonce
  const msg = Buffer.from(String(q.out.message), 'base64');
  const signerLen = msg.readUInt16BE(6);
  const extraLen = msg.readUInt16BE(8 + signerLen);
  assert.equal(msg.subarray(10 + signerLen, 10 + signerLen + extraLen), nonce, 'quote over the asked nonce');
  assert.ok(String(q.out.eventLog).length > 0 && String(q.out.pcrs).length > 0);
  const before = instances;
  const bad = await client('quote', '--nonce', 'zz');
  assert.is(bad.code, 1);
  assert.is((bad.out.error as { code: string }).code, 'PKS_BAD_REQUEST');
  assert.is(instances, before + 1, 'one instance per request');
});

test('the quote service not there: the client answers PKS_SERVICE_UNAVAILABLE, it does not hang', async () => {
  const r = await new Promise<{ code: number; out: { error?: { code: string } } }>((resolve) =>
    execFile(process.execPath, ['--import', 'tsx', path.join(root, 'services/attest/quote-client.ts'), 'enroll'], { cwd: root, env: { ...process.env, PKS_QUOTE_SOCKET: path.join(dir, 'nothing.sock') }, timeout: 60_000 }, (err, stdout) =>
      resolve({ code: err ? 1 : 0, out: JSON.parse(String(stdout).trim()) }),
    ),
  );
  assert.is(r.code, 1);
  assert.is(r.out.error?.code, 'PKS_SERVICE_UNAVAILABLE');
});

test.run();
