// The tester API: fastify over HTTPS with mutual TLS. Who is asking comes from the client
// certificate (CN = tester id, checked by TLS against the tester CA) and the tester registry in
// the keystore (station, allowed pools, expiry, revocation). Every route validates its input
// against the schemas in routes.ts; every error is an RFC 9457 problem carrying our code.
import type { Registry } from '../../appliance/metrics.js';
import { promMetrics } from './prom-metrics.js';
import { retryAfterOf } from '../../appliance/contracts/update.js';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { createRequire } from 'node:module';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Ajv as AjvType, ErrorObject, Options } from 'ajv';
import type { DeepReadonly } from '../../appliance/config.js';
import { PksError, asPksError, pksError, problem, type ErrorCode } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import type {
  ConfirmResponse,
  EcuCertResponse,
  FailResponse,
  HistoryResponse,
  ReserveResponse,
  TesterRecord,
} from '../../appliance/contracts/keystore.js';
import type { TesterApiConfig, TlsMaterial } from './config.js';
import { ConnectionGuard } from './connections.js';
import { frameworkProblem, makeClientErrorHandler } from './http-errors.js';
import { KeyedBuckets, RecentReservations } from './limits.js';
import { OPENAPI_FILE } from './openapi.js';
import { BODY_LIMIT, ROUTES, type RouteId } from './routes.js';

const require = createRequire(import.meta.url);
const Ajv = require('ajv').default as new (o: Options) => AjvType;
const addFormats = require('ajv-formats').default as (a: AjvType) => AjvType;

/** What we need of an IPC client (appliance/ipc.ts ipcClient): errors arrive as PksError. */
export interface Caller {
  call<T = unknown>(verb: string, body?: unknown, timeoutMs?: number): Promise<T>;
}

/** Counters for the sentinel (and tests); plain numbers, read them any time. */
export interface Metrics {
  requests: number;
  /** TLS handshakes that failed (no or a foreign certificate, old protocol, garbage) */
  handshakeFailures: number;
  /** connections dropped by the per-source limit on failed handshakes */
  handshakesLimited: number;
  /** connections refused at accept by the total or per-source connection cap */
  connectionsRefused: number;
  /** requests refused for who the tester is: unknown, revoked, expired, pool not allowed */
  authFailures: number;
  rateLimited: number;
  quotaExceeded: number;
  /** the latest failed handshakes and refused testers, newest last (bounded), for the sentinel:
   * source = the peer address, cn = the certificate's CN when there was one, code = why */
  recentAuthFailures: { at: string; source: string; cn: string | null; code: string }[];
  /** problems answered, by code */
  errors: Record<string, number>;
}

export interface TesterApiOptions {
  config: DeepReadonly<TesterApiConfig>;
  tls: TlsMaterial;
  keystore: Caller;
  /** the tester API signs nothing (issue 9): status and public keys only */
  vault: Caller;
  log: Logger;
  now?: () => number;
}

export interface TesterApi {
  app: FastifyInstance;
  server: https.Server;
  metrics: Metrics;
  /** the OpenMetrics registry (main.ts serves it on cfg.metrics) */
  registry: Registry;
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
}

interface Identity {
  cn: string;
  notAfter: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    tester: TesterRecord | null;
    cn: string | null;
  }
}

/** Keystore answers whose detail is meant for the tester; any other code keeps only its title. */
const UPSTREAM_DETAIL = new Set<ErrorCode>([
  'PKS_BAD_REQUEST',
  'PKS_BAD_HEX',
  'PKS_OUT_OF_RANGE',
  'PKS_NOT_FOUND',
  'PKS_CONFLICT',
  'PKS_POOL_UNKNOWN',
  'PKS_POOL_EMPTY',
  'PKS_UPDATE_DRAINING',
  'PKS_POOL_FORBIDDEN',
  'PKS_CSR_INVALID',
  'PKS_STATE_INVALID',
  'PKS_SHE_INVALID',
  'PKS_TESTER_UNKNOWN',
  'PKS_TESTER_EXPIRED',
  // the keystore's issuance answers (issue 10), mapped as they come
  'PKS_QUOTA_EXCEEDED',
  'PKS_RESERVATIONS_OPEN',
  'PKS_RESERVED_BY_OTHER',
  'PKS_ALREADY_INJECTED',
  'PKS_SHE_COUNTER_EXHAUSTED',
]);
/** the keystore's refusals of a tester's grant (services/keystore/grant.ts) */
const GRANT_REFUSALS = new Set<ErrorCode>(['PKS_TESTER_UNKNOWN', 'PKS_TESTER_EXPIRED', 'PKS_POOL_FORBIDDEN']);
const UNREACHABLE = new Set<ErrorCode>(['PKS_IPC_UNAVAILABLE', 'PKS_IPC_TIMEOUT', 'PKS_IPC_PROTOCOL', 'PKS_IPC_FORBIDDEN', 'PKS_IPC_UNKNOWN_VERB']);

const withRetryAfter = (e: PksError, ms: number): PksError => Object.assign(e, { retryAfterS: Math.max(1, Math.ceil(ms / 1000)) });

function describeValidation(errs: ErrorObject[], context: string): { code: ErrorCode; detail: string; field: string } {
  const err = errs[0]!;
  const base = err.instancePath ? err.instancePath.slice(1).replace(/\//g, '.') : '';
  let field = base;
  let what: string;
  let code: ErrorCode = 'PKS_BAD_REQUEST';
  if (err.keyword === 'additionalProperties') {
    field = [base, (err.params as { additionalProperty: string }).additionalProperty].filter(Boolean).join('.');
    what = 'is not a known field';
  } else if (err.keyword === 'required') {
    field = [base, (err.params as { missingProperty: string }).missingProperty].filter(Boolean).join('.');
    what = 'is missing';
  } else if (err.keyword === 'pattern') {
    const hexLen = /^\^\[0-9a-fA-F\]\{(\d+)\}\$$/.exec((err.params as { pattern: string }).pattern);
    if (hexLen) {
      code = 'PKS_BAD_HEX';
      what = `must be hex of ${Number(hexLen[1]) / 2} bytes`;
    } else what = 'has the wrong format';
  } else {
    what = err.message ?? 'is invalid';
  }
  const where = context === 'querystring' ? 'query' : context === 'params' ? 'path' : context;
  return { code, field: field || '(top level)', detail: `${where} '${field || '(top level)'}' ${what}` };
}

export async function createTesterApi(opts: TesterApiOptions): Promise<TesterApi> {
  const { config: cfg, log } = opts;
  const now = opts.now ?? Date.now;
  const problemCode = new WeakMap<FastifyReply, string>();
  const metrics: Metrics = { requests: 0, handshakeFailures: 0, handshakesLimited: 0, connectionsRefused: 0, authFailures: 0, rateLimited: 0, quotaExceeded: 0, recentAuthFailures: [], errors: {} };
  const prom = promMetrics({ metrics, keystore: opts.keystore, timeoutMs: cfg.ipc.timeoutMs });
  const L = cfg.limits;
  const rate = new KeyedBuckets(L.burst, L.requestsPerSecond, now);
  const quota = new KeyedBuckets(L.newReservationsPerHour, L.newReservationsPerHour / 3600, now);
  const recent = new RecentReservations();
  const H = cfg.http;
  const guard = new ConnectionGuard(
    { maxConnections: L.maxConnections, maxConnectionsPerSource: L.maxConnectionsPerSource, failuresPerWindow: L.handshakesPerWindow, windowMs: L.handshakeWindowSeconds * 1000, handshakeTimeoutMs: H.handshakeTimeoutSeconds * 1000 },
    now,
  );
  const openapiText = readFileSync(OPENAPI_FILE, 'utf8');
  let keystoreReachable = true;
  let closing = false;

  // one compiler for bodies (exact types, nothing removed or coerced), one for the URL parts
  // (which are strings by nature: `?limit=20` must become a number)
  const strictAjv = new Ajv({ allErrors: false, strict: true, useDefaults: true, coerceTypes: false, removeAdditional: false });
  const urlAjv = new Ajv({ allErrors: false, strict: true, useDefaults: true, coerceTypes: true, removeAdditional: false });
  addFormats(strictAjv);
  addFormats(urlAjv);

  const app = Fastify({
    logger: false,
    https: {
      key: opts.tls.key,
      cert: opts.tls.cert,
      ca: opts.tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ciphers: cfg.tls.ciphers,
      honorCipherOrder: true,
      sessionTimeout: cfg.tls.sessionTimeoutSeconds,
      // resumption (TLS 1.2 session ids) is only offered within this context
      sessionIdContext: 'pks-tester-api',
      ticketKeys: randomBytes(48),
      handshakeTimeout: H.handshakeTimeoutSeconds * 1000,
      // the HTTP layer's limits (http-errors.ts answers each with a coded problem)
      maxHeaderSize: H.maxHeaderBytes,
      requestTimeout: H.requestTimeoutSeconds * 1000,
      headersTimeout: Math.min(H.headersTimeoutSeconds, H.requestTimeoutSeconds) * 1000,
      connectionsCheckingInterval: Math.min(1000, H.headersTimeoutSeconds * 500),
      // checked in onRequest below, so a missing Host is a coded problem, not node's bare 400
      requireHostHeader: false,
    } as https.ServerOptions,
    bodyLimit: BODY_LIMIT,
    keepAliveTimeout: cfg.tls.keepAliveSeconds * 1000,
    requestTimeout: H.requestTimeoutSeconds * 1000,
    clientErrorHandler: makeClientErrorHandler((e) => void (metrics.errors[e.code] = (metrics.errors[e.code] ?? 0) + 1)),
    frameworkErrors: (err, req, reply) => void sendProblem(reply, req, frameworkProblem((err as { code?: string }).code)),
    connectionTimeout: 0,
    routerOptions: { maxParamLength: 128 },
    // while stopping, requests on open keep-alive connections get a coded 503 (below)
    return503OnClosing: false,
    forceCloseConnections: 'idle',
  });
  const server = app.server as https.Server;
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strictAjv : urlAjv).compile(schema));
  app.decorateRequest('tester', null);
  app.decorateRequest('cn', null);

  // --- connection caps and the limit on failed handshakes per source, before any TLS work
  // (connections.ts says who is spared)
  server.on('connection', (sock: Socket) => {
    const refused = guard.admit(sock);
    if (!refused) return;
    if (refused === 'handshakes') metrics.handshakesLimited++;
    else metrics.connectionsRefused++;
    sock.destroy();
  });
  server.on('secureConnection', (sock: TLSSocket) => {
    if (sock.authorized) guard.authenticated(sock);
  });
  const noteAuthFailure = (source: string, cn: string | null, code: string): void => {
    metrics.recentAuthFailures.push({ at: new Date().toISOString(), source: source.slice(0, 64), cn: cn?.slice(0, 64) ?? null, code });
    if (metrics.recentAuthFailures.length > 1000) metrics.recentAuthFailures.splice(0, metrics.recentAuthFailures.length - 1000);
  };
  server.on('tlsClientError', (err: Error & { code?: string }, sock: TLSSocket) => {
    metrics.handshakeFailures++;
    guard.failed(sock);
    let cn: string | null = null;
    try {
      const c = sock.getPeerCertificate?.()?.subject?.CN;
      cn = typeof c === 'string' ? c : null;
    } catch {
      cn = null;
    }
    noteAuthFailure(guard.sourceOf(sock), cn, err.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' ? 'no-certificate' : 'handshake-failed');
  });
  const rotate = setInterval(() => server.setTicketKeys(randomBytes(48)), cfg.tls.ticketRotateSeconds * 1000);
  rotate.unref();

  // --- errors
  const sendProblem = (reply: FastifyReply, req: FastifyRequest, e: PksError, extra: Record<string, unknown> = {}): FastifyReply => {
    metrics.errors[e.code] = (metrics.errors[e.code] ?? 0) + 1;
    problemCode.set(reply, e.code);
    const retryAfter = (e as PksError & { retryAfterS?: number }).retryAfterS ?? (e.code === 'PKS_UPDATE_DRAINING' ? retryAfterOf(e.detail) : undefined);
    if (retryAfter) void reply.header('retry-after', String(retryAfter));
    return reply
      .code(e.status)
      .type('application/problem+json')
      // `instance` is the route's template, never the path as sent (which is input)
      .send({ ...problem(e, req.routeOptions?.url), ...extra });
  };
  app.setErrorHandler((err, req, reply) => {
    const fe = err as { validation?: ErrorObject[]; validationContext?: string; code?: string; statusCode?: number };
    let e: PksError;
    let extra: Record<string, unknown> = {};
    if (err instanceof PksError) e = err;
    else if (fe.validation) {
      const v = describeValidation(fe.validation, fe.validationContext ?? 'body');
      e = pksError(v.code, v.detail);
      extra = { field: v.field };
    } else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = pksError('PKS_TOO_LARGE', 'request body is too large');
    else if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = pksError('PKS_BAD_REQUEST', 'content-type must be application/json');
    else if (fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') e = pksError('PKS_BAD_REQUEST', 'body is empty');
    else if (fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (err as Error).name === 'SyntaxError') e = pksError('PKS_BAD_REQUEST', 'body is not JSON');
    else if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) e = pksError('PKS_BAD_REQUEST', 'request is malformed');
    else e = asPksError(err);
    // fastify closes after any body parser error; a JSON body that was read whole but does not
    // parse leaves the framing intact, and a close costs the tester a new handshake
    if (fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || (err as Error).name === 'SyntaxError') void reply.removeHeader('connection');
    if (e.code === 'PKS_INTERNAL') log.error('request failed', { url: req.url.split('?')[0], tester: req.cn, err });
    return sendProblem(reply, req, e, extra);
  });
  app.setNotFoundHandler((req, reply) => sendProblem(reply, req, pksError('PKS_NOT_FOUND', 'no such endpoint')));
  // OpenMetrics (prom-metrics.ts): every answered request, by its route template
  app.addHook('onResponse', async (req, reply) => {
    prom.response(req.routeOptions?.url ?? 'unmatched', req.method, reply.statusCode, problemCode.get(reply) ?? 'ok', reply.elapsedTime / 1000);
  });
  // HTTP/1.1 wants a Host; node's own check (off above) answers a bare 400
  app.addHook('onRequest', async (req) => {
    if (!req.headers.host) throw pksError('PKS_BAD_REQUEST', 'the Host header is missing');
  });

  // --- upstream calls: unreachable → 503 PKS_SERVICE_UNAVAILABLE, details only when meant for testers
  const upstream = async <T>(who: 'keystore' | 'vault', verb: string, body: unknown): Promise<T> => {
    const client = who === 'keystore' ? opts.keystore : opts.vault;
    try {
      const res = await client.call<T>(verb, body, cfg.ipc.timeoutMs);
      if (who === 'keystore') keystoreReachable = true;
      return res;
    } catch (err) {
      const e = asPksError(err);
      if (UNREACHABLE.has(e.code)) {
        if (who === 'keystore' && e.code !== 'PKS_IPC_FORBIDDEN' && e.code !== 'PKS_IPC_UNKNOWN_VERB') keystoreReachable = false;
        log.warn(`${who} call failed`, { verb, code: e.code, detail: e.detail });
        throw pksError('PKS_SERVICE_UNAVAILABLE', `${who} is not reachable`);
      }
      if (who === 'keystore') keystoreReachable = true;
      if (e.code === 'PKS_INTERNAL') throw pksError('PKS_INTERNAL');
      if (UPSTREAM_DETAIL.has(e.code)) throw e;
      log.warn(`${who} refused`, { verb, code: e.code, detail: e.detail });
      throw pksError(e.code);
    }
  };

  // --- who is asking
  const identities = new WeakMap<TLSSocket, Identity>();
  const identityOf = (sock: TLSSocket): Identity => {
    let id = identities.get(sock);
    if (id) return id;
    if (!sock.authorized) throw pksError('PKS_AUTH_REQUIRED');
    const cert = sock.getPeerCertificate();
    const cn = cert?.subject?.CN;
    if (typeof cn !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(cn)) throw pksError('PKS_TESTER_UNKNOWN', 'certificate CN is not a tester id');
    id = { cn, notAfter: Date.parse(cert.valid_to) };
    identities.set(sock, id);
    return id;
  };

  // No cache for authorisation: every request asks the keystore's registry (one LMDB read),
  // so a revocation holds from the next request on (issue 9, item 11). A cache would need a
  // push from every path that changes a grant (pksctl, ops revoke-tester, expiry).
  const lookupTester = (cn: string): Promise<TesterRecord> => upstream<TesterRecord>('keystore', 'tester-get', { cn });

  const authFail = (req: FastifyRequest, code: ErrorCode, detail: string): PksError => {
    metrics.authFailures++;
    noteAuthFailure(guard.sourceOf(req.raw.socket), req.cn, code);
    return pksError(code, detail);
  };

  /** mTLS identity and the per-tester rate limit: every route that needs a client certificate */
  const checkMtls = async (req: FastifyRequest): Promise<void> => {
    const id = identityOf(req.raw.socket as TLSSocket);
    req.cn = id.cn;
    const wait = rate.take(id.cn);
    if (wait > 0) {
      metrics.rateLimited++;
      throw withRetryAfter(pksError('PKS_RATE_LIMITED', 'request rate over the limit for this tester'), wait);
    }
  };

  /** mTLS and an unexpired certificate; the grant is the keystore's to check, in the route's own call */
  const checkGranted = async (req: FastifyRequest): Promise<void> => {
    await checkMtls(req);
    if (!(identityOf(req.raw.socket as TLSSocket).notAfter > now())) throw authFail(req, 'PKS_TESTER_EXPIRED', 'tester certificate has expired');
  };

  /** A keystore call that checked the tester's grant: its refusal of the grant counts as an auth failure here. */
  const granted = async <T>(req: FastifyRequest, verb: string, body: unknown): Promise<T> => {
    try {
      return await upstream<T>('keystore', verb, body);
    } catch (e) {
      if (e instanceof PksError && GRANT_REFUSALS.has(e.code)) throw authFail(req, e.code, e.detail);
      throw e;
    }
  };

  const checkTester = async (req: FastifyRequest): Promise<void> => {
    await checkMtls(req);
    const id = identityOf(req.raw.socket as TLSSocket);
    let rec: TesterRecord;
    try {
      rec = await lookupTester(id.cn);
    } catch (e) {
      if (e instanceof PksError && e.code === 'PKS_TESTER_UNKNOWN') throw authFail(req, 'PKS_TESTER_UNKNOWN', 'tester is not registered');
      throw e;
    }
    if (rec.revoked || rec.cn !== id.cn) throw authFail(req, 'PKS_TESTER_UNKNOWN', 'tester is revoked');
    const t = now();
    const grantEnds = Date.parse(rec.expiresAt);
    if (!(grantEnds > t)) throw authFail(req, 'PKS_TESTER_EXPIRED', 'tester authorization has expired');
    if (!(id.notAfter > t)) throw authFail(req, 'PKS_TESTER_EXPIRED', 'tester certificate has expired');
    req.tester = rec;
  };


  // --- handlers
  const handlers: Record<RouteId, (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>> = {
    'she-reserve': async (req, reply) => {
      const cn = req.cn!;
      const { pool, uid } = req.body as { pool: string; uid: string };
      // the keystore owns the quotas (durable, charged in the reservation's transaction); this
      // bucket is only a coarse front limit
      let took = false;
      if (!recent.has(cn, pool, uid)) {
        const wait = quota.take(cn);
        if (wait > 0) {
          metrics.quotaExceeded++;
          throw withRetryAfter(pksError('PKS_QUOTA_EXCEEDED', 'new reservations per hour over the quota for this tester'), wait);
        }
        took = true;
      }
      let res: ReserveResponse;
      try {
        res = await granted<ReserveResponse>(req, 'reserve', { pool, uid: uid.toLowerCase(), tester: cn });
      } catch (e) {
        // only a definite refusal (nothing committed) gives the token back; a timeout may have committed
        if (took && e instanceof PksError && e.code !== 'PKS_SERVICE_UNAVAILABLE' && e.code !== 'PKS_INTERNAL') quota.refund(cn);
        if (e instanceof PksError) {
          const after = /retry after (\d+) s/.exec(e.detail);
          if (e.code === 'PKS_QUOTA_EXCEEDED' || e.code === 'PKS_RESERVATIONS_OPEN') metrics.quotaExceeded++;
          if (after) throw withRetryAfter(e, Number(after[1]) * 1000);
          const pkg = e.code === 'PKS_ALREADY_INJECTED' ? /package (\S+) \(/.exec(e.detail) : null;
          if (pkg) return sendProblem(reply, req, e, { packageId: pkg[1] });
        }
        throw e;
      }
      if (took && res.reused) quota.refund(cn);
      if (!res.reused) prom.issued(pool);
      recent.add(cn, pool, uid);
      return res;
    },
    'she-confirm': async (req, reply) => {
      const { packageId } = req.params as { packageId: string };
      const { m4, m5 } = req.body as { m4: string; m5: string };
      const res = await granted<ConfirmResponse>(req, 'confirm', { packageId, tester: req.cn!, m4: m4.toLowerCase(), m5: m5.toLowerCase() });
      if (!res.verified) {
        return sendProblem(reply, req, pksError('PKS_SHE_PROOF_MISMATCH', 'the ECU proof does not match; the key is burned'), {
          packageId: res.packageId,
          state: res.state,
        });
      }
      return res;
    },
    'she-relay': async (req) => {
      const b = req.body as { origin: string; packageId: string; pool: string; uid: string; counter: number; m4: string; m5: string };
      const tester = req.tester!;
      if (!tester.pools.includes(b.pool)) throw authFail(req, 'PKS_POOL_FORBIDDEN', `tester may not use pool '${b.pool}'`);
      await upstream('keystore', 'relay-proof', { ...b, uid: b.uid.toLowerCase(), m4: b.m4.toLowerCase(), m5: b.m5.toLowerCase(), tester: tester.cn, station: tester.station });
      return { relayed: true };
    },
    'she-fail': async (req) => {
      const { packageId } = req.params as { packageId: string };
      const { reason } = req.body as { reason: string };
      return await upstream<FailResponse>('keystore', 'fail', { packageId, tester: req.tester!.cn, reason });
    },
    history: async (req) => {
      const { limit } = req.query as { limit: number };
      return await upstream<HistoryResponse>('keystore', 'history', { tester: req.tester!.cn, limit });
    },
    'ecu-certificate': async (req) => {
      const tester = req.tester!;
      const { uid, csr, profile } = req.body as { uid: string; csr: string; profile: string };
      if (!(tester.certProfiles ?? []).includes(profile)) throw authFail(req, 'PKS_POOL_FORBIDDEN', `tester may not use certificate profile '${profile}'`);
      // a certificate counts like a new key against the tester's limits
      const wait = quota.take(tester.cn);
      if (wait > 0) {
        metrics.quotaExceeded++;
        throw withRetryAfter(pksError('PKS_QUOTA_EXCEEDED', 'new issuances per hour over the quota for this tester'), wait);
      }
      // the keystore checks the grant and the CSR again, records the request, has the vault sign
      let cert: EcuCertResponse;
      try {
        cert = await upstream<EcuCertResponse>('keystore', 'ecu-cert', { tester: tester.cn, uid: uid.toLowerCase(), profile, csr });
      } catch (e) {
        quota.refund(tester.cn);
        throw e;
      }
      return { certificate: cert.certificate, serial: cert.serial };
    },
    openapi: async (_req, reply) => reply.type('application/json').send(openapiText),
    health: async (req) => {
      try {
        await lookupTester(req.cn!);
      } catch {
        /* reachability is what counts here, not this tester's standing */
      }
      return { ready: keystoreReachable };
    },
  };

  for (const r of ROUTES) {
    app.route({
      method: r.method,
      url: r.url,
      bodyLimit: r.bodyLimit ?? BODY_LIMIT,
      schema: r.id === 'openapi' ? {} : r.schema,
      onRequest: async (req, reply) => {
        metrics.requests++;
        if (closing) {
          void reply.header('connection', 'close');
          throw pksError('PKS_SERVICE_UNAVAILABLE', 'service is stopping');
        }
        await (r.auth === 'tester' ? checkTester(req) : r.auth === 'granted' ? checkGranted(req) : checkMtls(req));
      },
      handler: handlers[r.id],
    });
  }
  await app.ready();

  return {
    app,
    server,
    metrics,
    registry: prom.registry,
    async listen() {
      await app.listen({ host: cfg.listen.host, port: cfg.listen.port });
      return server.address() as AddressInfo;
    },
    async close() {
      closing = true;
      clearInterval(rotate);
      await app.close();
    },
  };
}

