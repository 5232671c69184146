// The IPC wire (appliance/ipc-frame.ts) as a hostile local caller would use it: requests
// multiplexed on one connection, frames past every size limit, garbage, values JSON cannot
// carry; and `pksctl ipc`, the debug tool that replaced `curl --unix-socket`.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Packr } from 'msgpackr';
import { errorCode } from '../helpers/errors.js';
import { decode, encodeRequest, FrameReader, splitAnswer } from '../../appliance/ipc-frame.js';
import { ipcClient, startIpcServer, type IpcServer } from '../../appliance/ipc.js';
import { silentLogger } from '../../appliance/log.js';
import { ROOT } from '../../scripts/plant/process.js';

const run = promisify(execFile);
const code = errorCode;

/** One raw connection: write frames, read answers by id. */
function raw(sock: string): { send(b: Buffer): void; answer(id: number): Promise<{ status: number; body: Record<string, unknown> }>; closed: Promise<void>; end(): void } {
  const c = net.createConnection(sock);
  const got = new Map<number, { status: number; body: Record<string, unknown> }>();
  const waiters = new Map<number, (a: { status: number; body: Record<string, unknown> }) => void>();
  const reader = new FrameReader(1 << 24, (f) => {
    const a = splitAnswer(f)!;
    const v = { status: a.status, body: decode(a.body) as Record<string, unknown> };
    const w = waiters.get(a.id);
    if (w) w(v);
    else got.set(a.id, v);
  }, () => {});
  c.on('data', (d: Buffer) => reader.push(d));
  c.on('error', () => {});
  return {
    send: (b) => void c.write(b),
    answer: (id) => (got.has(id) ? Promise.resolve(got.get(id)!) : new Promise((r) => waiters.set(id, r))),
    closed: new Promise((r) => c.once('close', () => r())),
    end: () => c.destroy(),
  };
}

const t = suite<{ dir: string; server: IpcServer; sock: string }>('IPC wire');
t.before(async (ctx) => {
  ctx.dir = await mkdtemp(path.join(os.tmpdir(), 'pks-ipcw-'));
  ctx.server = await startIpcServer({
    service: 'demo',
    dir: path.join(ctx.dir, 'demo'),
    log: silentLogger,
    requestTimeoutMs: 300,
    verbs: {
      echo: {
        request: { type: 'object', additionalProperties: false, required: ['text'], properties: { text: { type: 'string', maxLength: 100_000 } } },
        maxBytes: 2048,
        handler: (b: { text: string }) => ({ text: b.text }),
      },
      loose: { request: { type: 'object' }, handler: (b: unknown) => ({ got: b }) },
      slow: { request: { type: 'object' }, handler: () => new Promise((r) => setTimeout(() => r({ late: true }), 300)) },
      shaped: {
        request: { type: 'object' },
        response: { type: 'object', properties: { ok: { type: 'boolean' } } },
        handler: () => ({ ok: true, secret: 'must not leave', at: new Date(0) }),
      },
    },
    callers: { alice: ['echo', 'loose', 'slow', 'shaped'] },
  });
  ctx.sock = ctx.server.sockets.alice!;
});
t.after(async (ctx) => {
  await ctx.server.close();
  await rm(ctx.dir, { recursive: true, force: true });
});

t('requests share one connection and answer out of order: a slow one holds up nobody', async (ctx) => {
  const c = ipcClient(ctx.sock);
  const order: string[] = [];
  await Promise.all([c.call('slow').then(() => order.push('slow')), ...Array.from({ length: 50 }, (_, i) => c.call('echo', { text: `q${i}` }).then(() => order.push('fast')))]);
  assert.is(order.length, 51);
  assert.is(order[50], 'slow');
  await c.close();
});

t('a frame past every limit is refused and skipped; the connection still serves', async (ctx) => {
  const r = raw(ctx.sock);
  const huge = encodeRequest(7, 'loose', { blob: 'x'.repeat(200_000) });
  // sent in pieces, as a stream delivers it
  for (let i = 0; i < huge.length; i += 4096) r.send(huge.subarray(i, i + 4096));
  r.send(encodeRequest(8, 'echo', { text: 'after' }));
  assert.is((await r.answer(7)).body.code, 'PKS_TOO_LARGE');
  assert.equal((await r.answer(8)).body, { text: 'after' });
  // the verb's own limit, before its body is decoded
  r.send(encodeRequest(9, 'echo', { text: 'y'.repeat(4000) }));
  assert.is((await r.answer(9)).body.code, 'PKS_TOO_LARGE');
  r.end();
});

t('bodies that are not msgpack, or hold what JSON cannot carry, are coded refusals', async (ctx) => {
  const r = raw(ctx.sock);
  const head = (id: number, verb: string, body: Buffer): Buffer => {
    const f = Buffer.alloc(9 + verb.length + body.length);
    f.writeUInt32BE(f.length - 4, 0);
    f.writeUInt32BE(id, 4);
    f.writeUInt8(verb.length, 8);
    f.write(verb, 9, 'latin1');
    body.copy(f, 9 + verb.length);
    return f;
  };
  r.send(head(1, 'loose', Buffer.from([0xc1])));
  const packr = new Packr({ useRecords: false, moreTypes: true });
  r.send(head(2, 'loose', packr.pack({ when: new Date(), bytes: Buffer.from('hi') })));
  r.send(head(3, 'loose', packr.pack({ n: Number.NaN })));
  r.send(head(4, 'loose', Buffer.from([0x81, 0xa9, ...Buffer.from('__proto__'), 0x81, 0xa5, ...Buffer.from('admin'), 0xc3])));
  r.send(head(5, 'nope', packr.pack({})));
  for (const id of [1, 2, 3]) assert.is((await r.answer(id)).body.code, 'PKS_BAD_REQUEST', `request ${id}`);
  const proto = await r.answer(4);
  assert.is(({} as { admin?: boolean }).admin, undefined);
  assert.ok(proto.status === 1 || !('admin' in Object.getPrototypeOf(proto.body.got as object)));
  assert.is((await r.answer(5)).body.code, 'PKS_IPC_UNKNOWN_VERB');
  r.end();
});

t('a broken frame header ends that connection only; a caller stuck mid-frame is cut off', async (ctx) => {
  const bad = raw(ctx.sock);
  bad.send(Buffer.from([0, 0, 0, 2, 1, 2]));
  await bad.closed;
  const stuck = raw(ctx.sock);
  stuck.send(encodeRequest(1, 'echo', { text: 'never finished' }).subarray(0, 12));
  await stuck.closed;
  const c = ipcClient(ctx.sock);
  assert.equal(await c.call('echo', { text: 'ok' }), { text: 'ok' });
  await c.close();
});

t('a response schema trims what the handler returned', async (ctx) => {
  const c = ipcClient(ctx.sock);
  assert.equal(await c.call('shaped'), { ok: true });
  await c.close();
});

t('a closed client refuses calls; a server gone mid-call fails them as unavailable', async (ctx) => {
  const c = ipcClient(ctx.sock);
  await c.close();
  assert.is(await code(c.call('echo', { text: 'x' })), 'PKS_IPC_UNAVAILABLE');
  const other = await startIpcServer({ service: 'gone', dir: path.join(ctx.dir, 'gone'), log: silentLogger, verbs: { slow: { request: { type: 'object' }, handler: () => new Promise(() => {}) } }, callers: { alice: ['slow'] } });
  const g = ipcClient(other.sockets.alice!, { timeoutMs: 5000 });
  const p = code(g.call('slow'));
  await new Promise((r) => setTimeout(r, 50));
  await other.close();
  assert.is(await p, 'PKS_IPC_UNAVAILABLE');
  await g.close();
});

t('pksctl ipc SERVICE VERB JSON answers as JSON; refusals are coded', async (ctx) => {
  const env = { ...process.env, PKS_RUN_DIR: ctx.dir };
  const bin = path.join(ROOT, 'bin', 'pksctl.mjs');
  const ok = await run(process.execPath, [bin, 'ipc', 'demo', 'echo', '{"text":"hi"}', '--as', 'alice', '--compact'], { env, timeout: 60_000 });
  assert.equal(JSON.parse(ok.stdout), { text: 'hi' });
  const refused = await run(process.execPath, [bin, 'ipc', 'demo', 'echo', '{"text":1}', '--as', 'alice'], { env, timeout: 60_000 }).catch((e: { code: number; stderr: string }) => e);
  assert.is((refused as { code: number }).code, 2);
  assert.match((refused as { stderr: string }).stderr, 'PKS_BAD_REQUEST');
  const noSock = await run(process.execPath, [bin, 'ipc', 'demo', 'echo', '{}'], { env, timeout: 60_000 }).catch((e: { code: number; stderr: string }) => e);
  assert.match((noSock as { stderr: string }).stderr, 'PKS_IPC_UNAVAILABLE');
});

t.run();
