// The tester API: fastify over HTTPS with mutual TLS. Who is asking comes from the client
// certificate (CN = tester id, checked by TLS against the tester CA) and the tester registry in
// the keystore (station, allowed pools, expiry, revocation). Every route validates its input
// against the schemas in routes.ts; every error is an RFC 9457 problem carrying our code.
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
  CertLogRequest,
  ConfirmResponse,
  FailResponse,
  HistoryResponse,
  ReserveResponse,
  TesterRecord,
} from '../../appliance/contracts/keystore.js';
import type { TesterApiConfig, TlsMaterial } from './config.js';
import { EcuIssuer } from './ecu-cert.js';
import { KeyedBuckets, RecentReservations, SlidingWindow } from './limits.js';
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
  /** connections dropped by the per-source handshake limit */
  handshakesLimited: number;
  /** requests refused for who the tester is: unknown, revoked, expired, pool not allowed */
  authFailures: number;
  rateLimited: number;
  quotaExceeded: number;
  /** the latest failed handshakes and refused testers, newest last (bounded), for the sentinel */
  recentAuthFailures: { at: string; source: string }[];
  /** problems answered, by code */
  errors: Record<string, number>;
}

export interface TesterApiOptions {
  config: DeepReadonly<TesterApiConfig>;
  tls: TlsMaterial;
  keystore: Caller;
  vault: Caller;
  /** PEM of the ECU issuing CA; without it the ECU certificate route answers PKS_NOT_FOUND */
  ecuCaPem?: string;
  log: Logger;
  now?: () => number;
}

export interface TesterApi {
  app: FastifyInstance;
  server: https.Server;
  metrics: Metrics;
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
  'PKS_STATE_INVALID',
  'PKS_SHE_INVALID',
  'PKS_TESTER_UNKNOWN',
  'PKS_TESTER_EXPIRED',
]);
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
  const metrics: Metrics = { requests: 0, handshakeFailures: 0, handshakesLimited: 0, authFailures: 0, rateLimited: 0, quotaExceeded: 0, recentAuthFailures: [], errors: {} };
  const L = cfg.limits;
  const rate = new KeyedBuckets(L.burst, L.requestsPerSecond, now);
  const quota = new KeyedBuckets(L.newReservationsPerHour, L.newReservationsPerHour / 3600, now);
  const recent = new RecentReservations();
  const handshakes = new SlidingWindow(L.handshakesPerWindow, L.handshakeWindowSeconds * 1000, now);
  const issuer = opts.ecuCaPem && cfg.ecuCa ? new EcuIssuer(opts.ecuCaPem, cfg.ecuCa, vaultSigner(opts.vault), now) : undefined;
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
    },
    bodyLimit: BODY_LIMIT,
    keepAliveTimeout: cfg.tls.keepAliveSeconds * 1000,
    requestTimeout: 30_000,
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

  // --- handshake limit per source address, before any TLS work is done for it
  server.on('connection', (sock) => {
    const ip = (sock as Socket).remoteAddress ?? '?';
    if (!handshakes.hit(ip)) {
      metrics.handshakesLimited++;
      sock.destroy();
    }
  });
  const noteAuthFailure = (source: string): void => {
    metrics.recentAuthFailures.push({ at: new Date().toISOString(), source: source.slice(0, 64) });
    if (metrics.recentAuthFailures.length > 1000) metrics.recentAuthFailures.splice(0, metrics.recentAuthFailures.length - 1000);
  };
  server.on('tlsClientError', (_err, sock) => {
    metrics.handshakeFailures++;
    noteAuthFailure((sock as Socket).remoteAddress ?? '?');
  });
  const rotate = setInterval(() => server.setTicketKeys(randomBytes(48)), cfg.tls.ticketRotateSeconds * 1000);
  rotate.unref();

  // --- errors
  const sendProblem = (reply: FastifyReply, req: FastifyRequest, e: PksError, extra: Record<string, unknown> = {}): FastifyReply => {
    metrics.errors[e.code] = (metrics.errors[e.code] ?? 0) + 1;
    const retryAfter = (e as PksError & { retryAfterS?: number }).retryAfterS ?? (e.code === 'PKS_UPDATE_DRAINING' ? retryAfterOf(e.detail) : undefined);
    if (retryAfter) void reply.header('retry-after', String(retryAfter));
    return reply
      .code(e.status)
      .type('application/problem+json')
      .send({ ...problem(e, req.url.split('?')[0]), ...extra });
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
    if (e.code === 'PKS_INTERNAL') log.error('request failed', { url: req.url.split('?')[0], tester: req.cn, err });
    return sendProblem(reply, req, e, extra);
  });
  app.setNotFoundHandler((req, reply) => sendProblem(reply, req, pksError('PKS_NOT_FOUND', 'no such endpoint')));

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

  const registry = new Map<string, { at: number; rec: Promise<TesterRecord> }>();
  const lookupTester = (cn: string): Promise<TesterRecord> => {
    const t = now();
    const hit = registry.get(cn);
    if (hit && t - hit.at < L.testerCacheMs) return hit.rec;
    const rec = upstream<TesterRecord>('keystore', 'tester-get', { cn });
    // a failed lookup is not remembered unless it is a definite answer
    rec.catch((e: unknown) => {
      if (!(e instanceof PksError && e.code === 'PKS_TESTER_UNKNOWN')) registry.delete(cn);
    });
    registry.set(cn, { at: t, rec });
    if (registry.size > 4096) registry.delete(registry.keys().next().value as string);
    return rec;
  };

  const authFail = (code: ErrorCode, detail: string): PksError => {
    metrics.authFailures++;
    noteAuthFailure(detail);
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

  const checkTester = async (req: FastifyRequest): Promise<void> => {
    await checkMtls(req);
    const id = identityOf(req.raw.socket as TLSSocket);
    let rec: TesterRecord;
    try {
      rec = await lookupTester(id.cn);
    } catch (e) {
      if (e instanceof PksError && e.code === 'PKS_TESTER_UNKNOWN') throw authFail('PKS_TESTER_UNKNOWN', 'tester is not registered');
      throw e;
    }
    if (rec.revoked || rec.cn !== id.cn) throw authFail('PKS_TESTER_UNKNOWN', 'tester is revoked');
    const t = now();
    const grantEnds = Date.parse(rec.expiresAt);
    if (!(grantEnds > t)) throw authFail('PKS_TESTER_EXPIRED', 'tester authorization has expired');
    if (!(id.notAfter > t)) throw authFail('PKS_TESTER_EXPIRED', 'tester certificate has expired');
    req.tester = rec;
  };


  // --- handlers
  let caChecked = false;
  const handlers: Record<RouteId, (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>> = {
    'she-reserve': async (req) => {
      const tester = req.tester!;
      const { pool, uid } = req.body as { pool: string; uid: string };
      if (!tester.pools.includes(pool)) throw authFail('PKS_POOL_FORBIDDEN', `tester may not use pool '${pool}'`);
      // a known retry is no new key: it never needs (or spends) quota
      const known = recent.has(tester.cn, pool, uid);
      let took = false;
      if (!known) {
        const wait = quota.take(tester.cn);
        if (wait > 0) {
          metrics.quotaExceeded++;
          throw withRetryAfter(pksError('PKS_QUOTA_EXCEEDED', 'new reservations per hour over the quota for this tester'), wait);
        }
        took = true;
      }
      let res: ReserveResponse;
      try {
        res = await upstream<ReserveResponse>('keystore', 'reserve', { pool, uid: uid.toLowerCase(), tester: tester.cn, station: tester.station });
      } catch (e) {
        if (took) quota.refund(tester.cn);
        throw e;
      }
      if (took && res.reused) quota.refund(tester.cn);
      recent.add(tester.cn, pool, uid);
      return res;
    },
    'she-confirm': async (req, reply) => {
      const { packageId } = req.params as { packageId: string };
      const { m4, m5 } = req.body as { m4: string; m5: string };
      const res = await upstream<ConfirmResponse>('keystore', 'confirm', { packageId, tester: req.tester!.cn, m4: m4.toLowerCase(), m5: m5.toLowerCase() });
      if (!res.verified) {
        return sendProblem(reply, req, pksError('PKS_SHE_PROOF_MISMATCH', 'the ECU proof does not match; the key is burned'), {
          packageId: res.packageId,
          state: res.state,
        });
      }
      return res;
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
      if (!issuer) throw pksError('PKS_NOT_FOUND', 'this box issues no ECU certificates');
      const tester = req.tester!;
      const { uid, csr } = req.body as { uid: string; csr: string };
      if (!caChecked) {
        // the configured CA certificate must be the HSM key's: otherwise every certificate is junk
        const { spki } = await upstream<{ spki: string }>('vault', 'public-key', { name: 'ecu-ca' });
        if (!Buffer.from(spki, 'base64').equals(issuer.caSpki)) {
          log.error('ecuCa.cert does not match the HSM ecu-ca key');
          throw pksError('PKS_CONFIG_INVALID', 'issuing CA certificate does not match the HSM key');
        }
        caChecked = true;
      }
      const cert = await issuer.issue(uid, csr);
      const entry: CertLogRequest = { tester: tester.cn, station: tester.station, uid: uid.toLowerCase(), serial: cert.serial, subject: cert.subject, notAfter: cert.notAfter };
      // logged like a key: the certificate leaves the box only once the keystore has it on record
      await upstream('keystore', 'cert-log', entry);
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
        await (r.auth === 'tester' ? checkTester(req) : checkMtls(req));
      },
      handler: handlers[r.id],
    });
  }
  await app.ready();

  return {
    app,
    server,
    metrics,
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

function vaultSigner(vault: Caller): (tbs: Buffer) => Promise<Buffer> {
  return async (tbs) => {
    let res: { sig: string };
    try {
      res = await vault.call<{ sig: string }>('sign-ecu-ca', { data: tbs.toString('base64') });
    } catch (err) {
      const e = asPksError(err);
      if (UNREACHABLE.has(e.code)) throw pksError('PKS_SERVICE_UNAVAILABLE', 'vault is not reachable');
      throw e.code === 'PKS_INTERNAL' ? pksError('PKS_INTERNAL') : pksError(e.code);
    }
    return Buffer.from(res.sig, 'base64');
  };
}
