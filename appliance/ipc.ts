// Local IPC between the services: HTTP/JSON on unix sockets (fastify in, undici out), so that
// `curl --unix-socket` can inspect any service. A service listens on one socket PER CALLER
// (`<runDir>/<service>/<caller>.sock`); the socket's file mode and group decide who can
// connect, so the kernel authenticates the caller and the verb table decides what it may do.
// Like openssh's monitor: a fixed table of verbs, each with a schema and a size limit, and
// anything else refused.
import http from 'node:http';
import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import { createRequire } from 'node:module';
import { PksError, asPksError, isErrorCode, pksError, problem } from './errors.js';
import type { Logger } from './log.js';

export interface VerbContext {
  caller: string;
  log: Logger;
}

export interface Verb<Req = any, Res = any> {
  /** JSON schema of the request body; objects should say additionalProperties: false. */
  request: Record<string, unknown>;
  /** Optional JSON schema of the response (fast serialization, and nothing extra leaks). */
  response?: Record<string, unknown>;
  /** Largest accepted body in bytes. */
  maxBytes?: number;
  handler(req: Req, ctx: VerbContext): Promise<Res> | Res;
}

export type VerbTable = Record<string, Verb>;

export interface IpcServerOptions {
  service: string;
  /** Runtime directory holding this service's sockets, e.g. /run/pks/vault. */
  dir: string;
  verbs: VerbTable;
  /** caller name → verbs it may use; one socket per caller. */
  callers: Record<string, readonly string[]>;
  /** Optional numeric group per caller socket, so only that caller's user can connect. */
  groups?: Record<string, number>;
  /** Socket file mode (default 0o660). */
  mode?: number;
  log: Logger;
  /** Max ms one request may take inside the server. */
  requestTimeoutMs?: number;
}

export interface IpcServer {
  sockets: Record<string, string>;
  close(): Promise<void>;
}

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const DEFAULT_MAX = 64 * 1024;

declare module 'node:http' {
  interface IncomingMessage {
    pksCaller?: string;
  }
}

export async function startIpcServer(opts: IpcServerOptions): Promise<IpcServer> {
  for (const [caller, verbs] of Object.entries(opts.callers)) {
    if (!NAME.test(caller)) throw pksError('PKS_CONFIG_INVALID', `bad IPC caller name '${caller}'`);
    for (const v of verbs) if (!opts.verbs[v]) throw pksError('PKS_CONFIG_INVALID', `caller '${caller}' allowed unknown verb '${v}'`);
  }
  let handler: http.RequestListener | undefined;
  const app: FastifyInstance = Fastify({
    logger: false,
    bodyLimit: Math.max(DEFAULT_MAX, ...Object.values(opts.verbs).map((v) => v.maxBytes ?? DEFAULT_MAX)),
    requestTimeout: opts.requestTimeoutMs ?? 30_000,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false } },
    serverFactory: (h) => {
      handler = h;
      return http.createServer(h);
    },
  });
  const allowed = new Map(Object.entries(opts.callers).map(([c, v]) => [c, new Set(v)]));

  app.setErrorHandler((err, req, reply) => {
    let e: PksError;
    const fe = err as { validation?: unknown; code?: string; statusCode?: number; message: string };
    if (err instanceof PksError) e = err;
    else if (fe.validation) e = pksError('PKS_BAD_REQUEST', fe.message.slice(0, 200));
    else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = pksError('PKS_TOO_LARGE');
    else if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) e = pksError('PKS_BAD_REQUEST', fe.message.slice(0, 200));
    else e = asPksError(err);
    if (e.code === 'PKS_INTERNAL') opts.log.error('ipc verb failed', { url: req.url, caller: req.raw.pksCaller, err });
    void reply.code(e.status).type('application/problem+json').send(problem(e, req.url));
  });
  app.setNotFoundHandler((req, reply) => {
    const e = pksError('PKS_IPC_UNKNOWN_VERB', req.url.slice(0, 64));
    void reply.code(e.status).type('application/problem+json').send(problem(e));
  });

  for (const [name, verb] of Object.entries(opts.verbs)) {
    app.post(`/v1/${name}`, {
      bodyLimit: verb.maxBytes ?? DEFAULT_MAX,
      schema: { body: verb.request, ...(verb.response ? { response: { 200: verb.response } } : {}) },
      // caller check before the body is even parsed: a caller that may not use a verb learns nothing
      onRequest: async (req) => {
        const caller = req.raw.pksCaller;
        if (!caller || !allowed.get(caller)?.has(name)) throw pksError('PKS_IPC_FORBIDDEN', `'${caller ?? '?'}' may not call '${name}'`);
      },
      handler: async (req) => verb.handler(req.body, { caller: req.raw.pksCaller!, log: opts.log }),
    });
  }
  await app.ready();

  await mkdir(opts.dir, { recursive: true, mode: 0o750 });
  const servers: http.Server[] = [];
  const sockets: Record<string, string> = {};
  for (const caller of Object.keys(opts.callers)) {
    const sock = path.join(opts.dir, `${caller}.sock`);
    await rm(sock, { force: true });
    const srv = http.createServer((req, res) => {
      req.pksCaller = caller;
      handler!(req, res);
    });
    srv.keepAliveTimeout = 60_000;
    srv.requestTimeout = opts.requestTimeoutMs ?? 30_000;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(sock, () => resolve());
    });
    await chmod(sock, opts.mode ?? 0o660);
    const gid = opts.groups?.[caller];
    if (gid !== undefined) await chown(sock, -1, gid);
    servers.push(srv);
    sockets[caller] = sock;
  }
  return {
    sockets,
    async close() {
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((r) => {
              s.close(() => r());
              s.closeAllConnections();
            }),
        ),
      );
      await app.close();
      await Promise.all(Object.values(sockets).map((s) => rm(s, { force: true })));
    },
  };
}

export interface IpcClientOptions {
  timeoutMs?: number;
  /** Concurrent connections to keep (pipelining is off: one request per connection at a time). */
  connections?: number;
}

export interface IpcClient {
  call<T = unknown>(verb: string, body?: unknown, timeoutMs?: number): Promise<T>;
  close(): Promise<void>;
}

/** A keep-alive client to one service socket; errors come back as the PksError the server sent. */
export function ipcClient(socketPath: string, opts: IpcClientOptions = {}): IpcClient {
  const timeout = opts.timeoutMs ?? 5_000;
  // a Pool, not a Client: a Client is one connection serving one request at a time, which
  // would serialise every caller behind the slowest (durable) request
  const { Pool } = undici();
  const client = new Pool('http://localhost', {
    socketPath,
    connections: opts.connections ?? 16,
    keepAliveTimeout: 30_000,
    headersTimeout: timeout,
    bodyTimeout: timeout,
  });
  return {
    async call<T>(verb: string, body: unknown = {}, t = timeout): Promise<T> {
      let res;
      try {
        res = await client.request({
          method: 'POST',
          path: `/v1/${verb}`,
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(t),
          headersTimeout: t,
          bodyTimeout: t,
        });
      } catch (err) {
        throw transportError(err, socketPath);
      }
      let text: string;
      try {
        text = await res.body.text();
      } catch (err) {
        throw transportError(err, socketPath);
      }
      let json: unknown;
      try {
        json = text ? JSON.parse(text) : {};
      } catch {
        throw pksError('PKS_IPC_PROTOCOL', `${path.basename(socketPath)} answered non-JSON`);
      }
      if (res.statusCode === 200) return json as T;
      const code = (json as { code?: unknown }).code;
      const detail = (json as { detail?: unknown }).detail;
      if (isErrorCode(code)) throw new PksError(code, typeof detail === 'string' ? detail : undefined);
      throw pksError('PKS_IPC_PROTOCOL', `status ${res.statusCode}`);
    },
    close: () => client.close(),
  };
}

// undici is loaded on first use only: it needs WebAssembly, which the vault (a server only,
// run with node --jitless under MemoryDenyWriteExecute=yes) does not have
type Undici = typeof import('undici');
let undiciModule: Undici | undefined;
const undici = (): Undici => (undiciModule ??= createRequire(import.meta.url)('undici') as Undici);

function transportError(err: unknown, socketPath: string): PksError {
  const e = err as { code?: string; name?: string };
  const where = path.basename(path.dirname(socketPath));
  if (e.name === 'TimeoutError' || e.name === 'AbortError' || e instanceof undici().errors.HeadersTimeoutError || e instanceof undici().errors.BodyTimeoutError)
    return pksError('PKS_IPC_TIMEOUT', where);
  return pksError('PKS_IPC_UNAVAILABLE', `${where}: ${e.code ?? 'connection failed'}`);
}
