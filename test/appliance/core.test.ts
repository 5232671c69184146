// The appliance core: config validated once and frozen, the error catalogue, log redaction,
// and the local IPC (callers, schemas, size limits, timeouts, a dead peer).
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfig, readCredential, validateConfig } from '../../appliance/config.js';
import { CATALOGUE, PksError, problem } from '../../appliance/errors.js';
import { ipcClient, startIpcServer, type IpcServer } from '../../appliance/ipc.js';
import { createLogger, redact, silentLogger } from '../../appliance/log.js';
import { vaultSchema } from '../../services/vault/config.js';
import { errorCode } from '../helpers/errors.js';

const code = errorCode;
const thrown = (fn: () => unknown): PksError => {
  try {
    fn();
  } catch (e) {
    return e as PksError;
  }
  throw new Error('did not throw');
};

const config = suite('config');
const good = { boxId: 'box-1', hsm: { module: '/usr/lib/softhsm/libsofthsm2.so', tokenLabel: 'pks' } };

config('a valid config gets its defaults and is frozen all the way down', () => {
  const c = validateConfig<{ hsm: { module: string }; ipc: object }>(vaultSchema, good);
  assert.equal(c.ipc, {});
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.hsm) && Object.isFrozen(c.ipc));
  assert.throws(() => {
    (c.hsm as { module: string }).module = '/tmp/evil.so';
  });
});

config('a bad config names the bad key', () => {
  const e1 = thrown(() => validateConfig(vaultSchema, { ...good, hsm: { ...good.hsm, module: 'relative.so' } }, 'vault.json'));
  assert.is(e1.code, 'PKS_CONFIG_INVALID');
  assert.match(e1.detail, "vault.json: key 'hsm.module'");
  assert.match(thrown(() => validateConfig(vaultSchema, { ...good, extra: 1 })).detail, "unknown key 'extra'");
  assert.match(thrown(() => validateConfig(vaultSchema, { hsm: good.hsm })).detail, "missing key 'boxId'");
});

config('a schema compiled once serves every later file alike; two schemas with one $id do not clash', () => {
  // the cached validator must not carry state from one file to the next (defaults, errors)
  const a = validateConfig<{ ipc: object }>(vaultSchema, good);
  assert.match(thrown(() => validateConfig(vaultSchema, { ...good, extra: 1 })).detail, "unknown key 'extra'");
  const b = validateConfig<{ ipc: object; boxId: string }>(vaultSchema, { ...good, boxId: 'box-2' });
  assert.equal(a.ipc, {});
  assert.equal(b.ipc, {});
  assert.is(b.boxId, 'box-2');
  assert.is.not(a.ipc, b.ipc);
  const one = { $id: 'pks:test/same', type: 'object', additionalProperties: false, properties: { n: { type: 'integer', default: 1 } } };
  const two = { $id: 'pks:test/same', type: 'object', additionalProperties: false, properties: { s: { type: 'string', default: 'x' } } };
  assert.equal(validateConfig(one, {}), { n: 1 });
  assert.equal(validateConfig(two, {}), { s: 'x' });
  assert.is(thrown(() => validateConfig(two, { n: 1 })).code, 'PKS_CONFIG_INVALID');
});

config('loadConfig refuses a missing, non-JSON or invalid file with a coded error', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-cfg-'));
  try {
    assert.is(thrown(() => loadConfig(vaultSchema, path.join(dir, 'none.json'))).code, 'PKS_CONFIG_UNREADABLE');
    await writeFile(path.join(dir, 'bad.json'), '{ not json');
    assert.is(thrown(() => loadConfig(vaultSchema, path.join(dir, 'bad.json'))).code, 'PKS_CONFIG_INVALID');
    await writeFile(path.join(dir, 'ok.json'), JSON.stringify(good));
    assert.is(loadConfig<{ boxId: string }>(vaultSchema, path.join(dir, 'ok.json')).boxId, 'box-1');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

config('credentials come from $CREDENTIALS_DIRECTORY, never empty', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-cred-'));
  const before = process.env.CREDENTIALS_DIRECTORY;
  try {
    await writeFile(path.join(dir, 'hsm-pin'), '1234\n');
    await writeFile(path.join(dir, 'empty'), '\n');
    process.env.CREDENTIALS_DIRECTORY = dir;
    assert.is(readCredential('hsm-pin'), '1234');
    assert.is(thrown(() => readCredential('empty')).code, 'PKS_CREDENTIAL_MISSING');
    assert.is(thrown(() => readCredential('missing')).code, 'PKS_CREDENTIAL_MISSING');
    assert.is(thrown(() => readCredential('../etc/passwd')).code, 'PKS_CREDENTIAL_MISSING');
  } finally {
    if (before === undefined) delete process.env.CREDENTIALS_DIRECTORY;
    else process.env.CREDENTIALS_DIRECTORY = before;
    await rm(dir, { recursive: true, force: true });
  }
});
config.run();

const errors = suite('errors and logs');
errors('every code has an HTTP status and a title; problems carry the code', () => {
  for (const [c, s] of Object.entries(CATALOGUE)) {
    assert.ok(/^PKS_[A-Z0-9_]+$/.test(c), c);
    assert.ok(s.status >= 400 && s.status < 600 && s.title.length > 0, c);
  }
  const p = problem(new PksError('PKS_POOL_EMPTY', 'oem1.a.4'), '/v1/she/packages');
  assert.equal(p, { type: 'urn:pks:error:PKS_POOL_EMPTY', title: 'pool has no available key', status: 503, detail: 'oem1.a.4', code: 'PKS_POOL_EMPTY', retry: true, instance: '/v1/she/packages' });
});

errors('logs never carry PINs, keys or key bytes', () => {
  const lines: string[] = [];
  const log = createLogger('t', { write: (l) => lines.push(l) });
  log.info('x', { pin: '1234', authKey: 'aa', newKey: 'bb', password: 'pw', token: 't', nested: { privateKey: 'k', m2: 'cc' }, data: Buffer.from('secret'), keyId: 4, pool: 'p' });
  const rec = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(rec.pin, '[redacted]');
  assert.equal(rec.authKey, '[redacted]');
  assert.equal(rec.newKey, '[redacted]');
  assert.equal(rec.password, '[redacted]');
  assert.equal(rec.token, '[redacted]');
  assert.equal(rec.nested, { privateKey: '[redacted]', m2: '[redacted]' });
  assert.equal(rec.data, '[bytes:6]');
  assert.equal([rec.keyId, rec.pool], [4, 'p']);
  assert.not.match(lines[0]!, 'secret');
  assert.equal(redact({ e: new PksError('PKS_HSM_LOGIN', 'bad') }), { e: { name: 'PksError', message: 'PKS_HSM_LOGIN: bad', code: 'PKS_HSM_LOGIN' } });
});
errors.run();

const ipc = suite<{ dir: string; server: IpcServer }>('local IPC');
ipc.before(async (ctx) => {
  ctx.dir = await mkdtemp(path.join(os.tmpdir(), 'pks-ipc-'));
  ctx.server = await startIpcServer({
    service: 'demo',
    dir: path.join(ctx.dir, 'demo'),
    log: silentLogger,
    verbs: {
      echo: {
        request: { type: 'object', additionalProperties: false, required: ['text'], properties: { text: { type: 'string', maxLength: 5000 } } },
        maxBytes: 2048,
        handler: (b: { text: string }, c) => ({ text: b.text, caller: c.caller }),
      },
      slow: { request: { type: 'object' }, handler: () => new Promise((r) => setTimeout(() => r({ late: true }), 1500)) },
      boom: {
        request: { type: 'object' },
        handler: () => {
          throw new Error('internal detail that must not leak');
        },
      },
    },
    callers: { alice: ['echo', 'slow', 'boom'], bob: ['slow'] },
  });
});
ipc.after(async (ctx) => {
  await ctx.server.close();
  await rm(ctx.dir, { recursive: true, force: true });
});

ipc('a caller gets its verbs; the socket says who it is', async (ctx) => {
  const a = ipcClient(ctx.server.sockets.alice!);
  assert.equal(await a.call('echo', { text: 'hi' }), { text: 'hi', caller: 'alice' });
  await a.close();
});

ipc('a caller that may not use a verb is refused; unknown verbs too', async (ctx) => {
  const b = ipcClient(ctx.server.sockets.bob!);
  assert.is(await code(b.call('echo', { text: 'hi' })), 'PKS_IPC_FORBIDDEN');
  assert.is(await code(b.call('nope', {})), 'PKS_IPC_UNKNOWN_VERB');
  await b.close();
});

ipc('schemas and size limits refuse bad bodies', async (ctx) => {
  const a = ipcClient(ctx.server.sockets.alice!);
  assert.is(await code(a.call('echo', { text: 1 })), 'PKS_BAD_REQUEST');
  assert.is(await code(a.call('echo', { text: 'x', more: 1 })), 'PKS_BAD_REQUEST');
  assert.is(await code(a.call('echo', { text: 'x'.repeat(4000) })), 'PKS_TOO_LARGE');
  await a.close();
});

ipc('internal errors are coded, without their detail', async (ctx) => {
  const a = ipcClient(ctx.server.sockets.alice!);
  try {
    await a.call('boom', {});
    assert.unreachable();
  } catch (e) {
    assert.is((e as PksError).code, 'PKS_INTERNAL');
    assert.not.match((e as PksError).detail, 'must not leak');
  }
  await a.close();
});

ipc('a slow peer times out, a missing one is unavailable', async (ctx) => {
  const a = ipcClient(ctx.server.sockets.alice!, { timeoutMs: 300 });
  assert.is(await code(a.call('slow', {})), 'PKS_IPC_TIMEOUT');
  await a.close();
  const none = ipcClient(path.join(ctx.dir, 'none', 'x.sock'));
  assert.is(await code(none.call('echo', { text: 'x' })), 'PKS_IPC_UNAVAILABLE');
  await none.close();
});

ipc('the sockets are not world-accessible', async (ctx) => {
  const { stat } = await import('node:fs/promises');
  for (const s of Object.values(ctx.server.sockets)) assert.is((await stat(s)).mode & 0o007, 0);
});
ipc.run();
