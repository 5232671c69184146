// Local IPC between the services: length-prefixed msgpack frames on unix sockets
// (appliance/ipc-frame.ts); `pksctl ipc SERVICE VERB JSON` inspects any service. A service
// listens on one socket PER CALLER (`<runDir>/<service>/<caller>.sock`); the socket's file mode
// and group decide who can connect, so the kernel authenticates the caller and the verb table
// decides what it may do. Like openssh's monitor: a fixed table of verbs, each with a schema
// (compiled once) and a size limit, and anything else refused.
import net from 'node:net';
import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Ajv as AjvType, Options as AjvOptions, ValidateFunction } from 'ajv';
import { PksError, asPksError, isErrorCode, pksError, problem } from './errors.js';
import { FrameReader, OK, PROBLEM, decode, encodeAnswer, encodeRequest, isJsonPlain, splitAnswer, splitRequest } from './ipc-frame.js';
import type { Logger } from './log.js';

export interface VerbContext {
  caller: string;
  log: Logger;
}

export interface Verb<Req = any, Res = any> {
  /** JSON schema of the request body; objects should say additionalProperties: false. */
  request: Record<string, unknown>;
  /** Optional JSON schema of the response: properties it does not name are dropped (nothing extra leaks). */
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
  /** Max ms a request may take to arrive whole (a caller stuck half-way through a frame is cut off). */
  requestTimeoutMs?: number;
}

export interface IpcServer {
  sockets: Record<string, string>;
  close(): Promise<void>;
}

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const DEFAULT_MAX = 64 * 1024;
/** requests one connection may have in flight; a caller past it is cut off */
const MAX_IN_FLIGHT = 4096;

const require = createRequire(import.meta.url);

const corked = new WeakSet<net.Socket>();
/** Frames written in one event-loop turn leave in one write(2). */
function writeInTurn(sock: net.Socket, frame: Buffer): void {
  if (!corked.has(sock)) {
    corked.add(sock);
    sock.cork();
    process.nextTick(() => {
      corked.delete(sock);
      sock.uncork();
    });
  }
  sock.write(frame);
}

interface CompiledVerb {
  verb: Verb;
  maxBytes: number;
  validate: ValidateFunction;
  shape?: ValidateFunction;
}

function compileVerbs(verbs: VerbTable): Map<string, CompiledVerb> {
  const Ajv = require('ajv').default as new (o: AjvOptions) => AjvType;
  const addFormats = require('ajv-formats').default as (a: AjvType) => AjvType;
  // the options fastify's compiler had here: exact types, defaults filled in, nothing removed
  const ajv = addFormats(new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: false, strict: false }));
  const out = addFormats(new Ajv({ removeAdditional: 'all', coerceTypes: false, useDefaults: false, allErrors: false, strict: false }));
  const m = new Map<string, CompiledVerb>();
  for (const [name, verb] of Object.entries(verbs))
    m.set(name, { verb, maxBytes: verb.maxBytes ?? DEFAULT_MAX, validate: ajv.compile(verb.request), ...(verb.response ? { shape: out.compile(verb.response) } : {}) });
  return m;
}

export async function startIpcServer(opts: IpcServerOptions): Promise<IpcServer> {
  for (const [caller, verbs] of Object.entries(opts.callers)) {
    if (!NAME.test(caller)) throw pksError('PKS_CONFIG_INVALID', `bad IPC caller name '${caller}'`);
    for (const v of verbs) if (!opts.verbs[v]) throw pksError('PKS_CONFIG_INVALID', `caller '${caller}' allowed unknown verb '${v}'`);
  }
  const verbs = compileVerbs(opts.verbs);
  const frameMax = Math.max(DEFAULT_MAX, ...[...verbs.values()].map((v) => v.maxBytes)) + 5 + 255;
  const partialMs = opts.requestTimeoutMs ?? 30_000;
  const allowed = new Map(Object.entries(opts.callers).map(([c, v]) => [c, new Set(v)]));

  const run = async (caller: string, verbName: string, body: Buffer): Promise<unknown> => {
    // caller check before the body is even decoded: a caller that may not use a verb learns nothing
    const cv = verbs.get(verbName);
    if (!cv) throw pksError('PKS_IPC_UNKNOWN_VERB', verbName.slice(0, 64));
    if (!allowed.get(caller)?.has(verbName)) throw pksError('PKS_IPC_FORBIDDEN', `'${caller}' may not call '${verbName}'`);
    if (body.length > cv.maxBytes) throw pksError('PKS_TOO_LARGE');
    let req: unknown;
    try {
      req = decode(body);
    } catch {
      throw pksError('PKS_BAD_REQUEST', 'body is not msgpack');
    }
    if (!isJsonPlain(req)) throw pksError('PKS_BAD_REQUEST', 'body holds values JSON cannot carry');
    if (!cv.validate(req)) {
      const e = cv.validate.errors?.[0];
      throw pksError('PKS_BAD_REQUEST', `body${e?.instancePath ?? ''} ${e?.message ?? 'is invalid'}`.slice(0, 200));
    }
    const res: unknown = await cv.verb.handler(req, { caller, log: opts.log });
    if (!cv.shape || !res || typeof res !== 'object') return res;
    // a copy is trimmed: the handler's object may be shared (a cache)
    const copy: unknown = JSON.parse(JSON.stringify(res));
    cv.shape(copy);
    return copy;
  };

  const serve = (caller: string, sock: net.Socket): void => {
    let inFlight = 0;
    let partial: NodeJS.Timeout | null = null;
    // answers that become ready in the same turn (one LMDB flush resolves many) go out in one write
    const send = (frame: Buffer): void => {
      if (!sock.destroyed) writeInTurn(sock, frame);
    };
    const fail = (id: number, err: unknown, verb: string): void => {
      let e: PksError;
      if (err instanceof PksError) e = err;
      else e = asPksError(err);
      if (e.code === 'PKS_INTERNAL') opts.log.error('ipc verb failed', { verb: verb.slice(0, 64), caller, err });
      send(encodeAnswer(id, PROBLEM, problem(e, `/v1/${verb.slice(0, 64)}`)));
    };
    const reader = new FrameReader(
      frameMax,
      (frame) => {
        const r = splitRequest(frame);
        if (!r) return void sock.destroy();
        if (++inFlight > MAX_IN_FLIGHT) return void sock.destroy();
        run(caller, r.verb, r.body).then(
          (res) => {
            inFlight--;
            let out: Buffer;
            try {
              out = encodeAnswer(r.id, OK, res);
            } catch (err) {
              return fail(r.id, err, r.verb);
            }
            send(out);
          },
          (err: unknown) => {
            inFlight--;
            fail(r.id, err, r.verb);
          },
        );
      },
      (id) => fail(id, pksError('PKS_TOO_LARGE'), '?'),
    );
    sock.on('data', (d: Buffer) => {
      reader.push(d);
      if (reader.pending && !partial) {
        partial = setTimeout(() => sock.destroy(), partialMs);
        partial.unref();
      } else if (!reader.pending && partial) {
        clearTimeout(partial);
        partial = null;
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => partial && clearTimeout(partial));
  };

  await mkdir(opts.dir, { recursive: true, mode: 0o750 });
  const servers: net.Server[] = [];
  const conns = new Set<net.Socket>();
  const sockets: Record<string, string> = {};
  for (const caller of Object.keys(opts.callers)) {
    const sock = path.join(opts.dir, `${caller}.sock`);
    await rm(sock, { force: true });
    const srv = net.createServer((c) => {
      conns.add(c);
      c.once('close', () => conns.delete(c));
      serve(caller, c);
    });
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
      const closed = Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
      for (const c of conns) c.destroy();
      await closed;
      await Promise.all(Object.values(sockets).map((s) => rm(s, { force: true })));
    },
  };
}

export interface IpcClientOptions {
  timeoutMs?: number;
  /** Kept for callers that set it: requests share one multiplexed connection, so it is not needed. */
  connections?: number;
}

export interface IpcClient {
  call<T = unknown>(verb: string, body?: unknown, timeoutMs?: number): Promise<T>;
  close(): Promise<void>;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  timer: NodeJS.Timeout;
}

/** answers a client takes: a whole outbox page and more, not unbounded */
const ANSWER_MAX = 64 * 1024 * 1024;

/** A client to one service socket; errors come back as the PksError the server sent. */
export function ipcClient(socketPath: string, opts: IpcClientOptions = {}): IpcClient {
  const timeout = opts.timeoutMs ?? 5_000;
  const where = path.basename(path.dirname(socketPath));
  const pending = new Map<number, Pending>();
  let nextId = 1;
  let sock: net.Socket | null = null;
  let closed = false;
  let drained: (() => void) | null = null;

  const settle = (id: number): Pending | undefined => {
    const p = pending.get(id);
    if (!p) return undefined;
    pending.delete(id);
    clearTimeout(p.timer);
    // an idle client does not keep its process alive
    if (!pending.size) {
      sock?.unref();
      drained?.();
    }
    return p;
  };

  const connect = (): net.Socket => {
    const s = net.createConnection(socketPath);
    const reader = new FrameReader(
      ANSWER_MAX,
      (frame) => {
        const a = splitAnswer(frame);
        const p = a && settle(a.id);
        if (!a || !p) return;
        let body: unknown;
        try {
          body = decode(a.body);
        } catch {
          return p.reject(pksError('PKS_IPC_PROTOCOL', `${where} answered non-msgpack`));
        }
        if (a.status === OK) return p.resolve(body);
        const code = (body as { code?: unknown })?.code;
        const detail = (body as { detail?: unknown })?.detail;
        p.reject(isErrorCode(code) ? new PksError(code, typeof detail === 'string' ? detail : undefined) : pksError('PKS_IPC_PROTOCOL', `${where} answered status ${a.status}`));
      },
      (id) => settle(id)?.reject(pksError('PKS_IPC_PROTOCOL', `${where} answered more than ${ANSWER_MAX} bytes`)),
    );
    s.on('data', (d: Buffer) => reader.push(d));
    s.on('error', (err: NodeJS.ErrnoException) => drop(s, pksError('PKS_IPC_UNAVAILABLE', `${where}: ${err.code ?? 'connection failed'}`)));
    s.on('close', () => drop(s, pksError('PKS_IPC_UNAVAILABLE', `${where}: connection closed`)));
    return s;
  };

  // a lost connection fails what was in flight on it; the next call connects again
  const drop = (s: net.Socket, e: PksError): void => {
    if (sock !== s) return;
    sock = null;
    s.destroy();
    for (const id of [...pending.keys()]) settle(id)?.reject(e);
  };

  return {
    call<T>(verb: string, body: unknown = {}, t = timeout): Promise<T> {
      if (closed) return Promise.reject(pksError('PKS_IPC_UNAVAILABLE', `${where}: client closed`));
      let frame: Buffer;
      const id = nextId;
      nextId = nextId >= 0xffffffff ? 1 : nextId + 1;
      try {
        frame = encodeRequest(id, verb, body);
      } catch {
        return Promise.reject(pksError('PKS_BAD_REQUEST', 'body cannot be encoded'));
      }
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => settle(id)?.reject(pksError('PKS_IPC_TIMEOUT', where)), t);
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
        const s = (sock ??= connect());
        s.ref();
        // requests made in the same turn (64 testers at once) go out in one write
        writeInTurn(s, frame);
      });
    },
    async close() {
      closed = true;
      if (pending.size) await new Promise<void>((r) => (drained = r));
      const s = sock;
      sock = null;
      if (s && !s.destroyed) {
        const gone = new Promise<void>((r) => s.once('close', () => r()));
        s.ref();
        s.end();
        await gone;
      }
    },
  };
}
