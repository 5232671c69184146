// The unlock service's HTTPS listener for people: mutual TLS with certificates from the HSM's
// user CA (nothing else gets past the handshake), the JSON API and the web console that uses it.
// Every response carries a strict CSP (no inline script, no foreign origin); every state-changing
// request must carry the anti-forgery header the console got from /v1/me (an HMAC of the client
// certificate's serial), come from our own origin and be JSON, because a browser sends the client
// certificate with any request any page makes it send.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { DeepReadonly } from '../../appliance/config.js';
import { PksError, asPksError, pksError, problem } from '../../appliance/errors.js';
import type { Logger } from '../../appliance/log.js';
import { NAME } from '../../appliance/schema.js';
import type { UnlockConfig, UnlockTls } from './config.js';
import { Gcra } from './limits.js';
import type { Identity, Unlock } from './unlock.js';

export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";
const CONSOLE_DIR = new URL('./console/', import.meta.url);
const ASSETS: Record<string, string> = { '/': 'index.html', '/console.js': 'console.js', '/console.css': 'console.css' };
const TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

export interface UnlockApi {
  app: FastifyInstance;
  server: https.Server;
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
}

declare module 'fastify' {
  interface FastifyRequest {
    who: Identity | null;
  }
}

const obj = (properties: Record<string, unknown>, required: string[] = Object.keys(properties)) => ({ type: 'object', additionalProperties: false, required, properties });
const REQ_ID = { type: 'string', pattern: '^[a-z0-9]{8,40}$' } as const;
const QUERY = obj({ user: NAME, ecu: { type: 'string', pattern: '^[0-9a-fA-F]{2,64}$' }, since: { type: 'string', format: 'date-time' }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } }, []);

export async function createUnlockApi(o: { cfg: DeepReadonly<UnlockConfig>; tls: UnlockTls; userCa: string; unlock: Unlock; log: Logger; now?: () => number }): Promise<UnlockApi> {
  const { cfg, unlock, log } = o;
  const csrfKey = randomBytes(32);
  const csrfOf = (serial: string): string => createHmac('sha256', csrfKey).update(serial).digest('base64url');
  const rate = new Gcra(cfg.limits.requestsPerSecond, cfg.limits.requestBurst, o.now);
  const assets = Object.fromEntries(Object.entries(ASSETS).map(([url, file]) => [url, { body: readFileSync(new URL(file, CONSOLE_DIR)), type: TYPES[file.split('.').pop()!]! }]));

  const app = Fastify({
    logger: false,
    https: {
      key: o.tls.key,
      cert: o.tls.cert,
      ca: o.userCa,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      sessionIdContext: 'pks-unlock',
    },
    bodyLimit: 16 * 1024,
    keepAliveTimeout: cfg.tls.keepAliveSeconds * 1000,
    requestTimeout: 30_000,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
  });
  const server = app.server as https.Server;
  app.decorateRequest('who', null);

  const send = (reply: FastifyReply, req: FastifyRequest, e: PksError): FastifyReply => {
    const retry = (e as PksError & { retryAfterS?: number }).retryAfterS;
    if (retry) void reply.header('retry-after', String(retry));
    return reply.code(e.status).type('application/problem+json').send(problem(e, req.url.split('?')[0]));
  };
  app.setErrorHandler((err, req, reply) => {
    const fe = err as { validation?: unknown; code?: string; statusCode?: number; message: string };
    let e: PksError;
    if (err instanceof PksError) e = err;
    else if (fe.validation) e = pksError('PKS_BAD_REQUEST', fe.message.slice(0, 200));
    else if (fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = pksError('PKS_TOO_LARGE', 'request body is too large');
    else if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = pksError('PKS_UNLOCK_CSRF', 'content-type must be application/json');
    else if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) e = pksError('PKS_BAD_REQUEST', 'request is malformed');
    else e = asPksError(err);
    if (e.code === 'PKS_INTERNAL') log.error('request failed', { url: req.url.split('?')[0], cn: req.who?.cn, err });
    return send(reply, req, e);
  });
  app.setNotFoundHandler((req, reply) => send(reply, req, pksError('PKS_NOT_FOUND', 'no such endpoint')));

  // page security on every answer, errors included
  app.addHook('onSend', async (_req, reply, payload) => {
    void reply.header('content-security-policy', CSP);
    void reply.header('x-content-type-options', 'nosniff');
    void reply.header('x-frame-options', 'DENY');
    void reply.header('referrer-policy', 'no-referrer');
    void reply.header('cross-origin-opener-policy', 'same-origin');
    void reply.header('cross-origin-resource-policy', 'same-origin');
    void reply.header('strict-transport-security', 'max-age=31536000');
    void reply.header('cache-control', 'no-store');
    return payload;
  });

  // who is asking: TLS checked the chain to the user CA; the keystore decides the rest per request
  app.addHook('onRequest', async (req) => {
    const sock = req.raw.socket as TLSSocket;
    if (!sock.authorized) throw pksError('PKS_AUTH_REQUIRED');
    const cert = sock.getPeerCertificate();
    const cn = cert?.subject?.CN;
    if (typeof cn !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(cn)) throw pksError('PKS_UNLOCK_USER_UNKNOWN', 'certificate CN is not a user name');
    const serial = String(cert.serialNumber ?? '').toLowerCase().padStart(32, '0');
    req.who = { cn, serial };
    const wait = rate.take(cn);
    if (wait > 0) throw Object.assign(pksError('PKS_RATE_LIMITED', 'requests over the limit for this user'), { retryAfterS: Math.max(1, Math.ceil(wait / 1000)) });
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const site = req.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'same-origin') throw pksError('PKS_UNLOCK_CSRF', 'cross-site request');
      const origin = req.headers.origin;
      if (origin !== undefined && origin !== `https://${req.headers.host ?? ''}`) throw pksError('PKS_UNLOCK_CSRF', 'foreign origin');
      const proof = Buffer.from(String(req.headers['x-pks-csrf'] ?? ''));
      const want = Buffer.from(csrfOf(serial));
      if (proof.length !== want.length || !timingSafeEqual(proof, want)) throw pksError('PKS_UNLOCK_CSRF', 'x-pks-csrf header missing or wrong: GET /v1/me gives it');
    }
  });

  const who = (req: FastifyRequest): Identity => req.who!;
  /** admin routes: a refusal of a named certificate holder is logged like any other */
  const asAdmin = async (req: FastifyRequest, action: string): Promise<string> => {
    try {
      return (await unlock.admin(who(req))).cn;
    } catch (err) {
      const e = asPksError(err);
      if (e.code === 'PKS_SERVICE_UNAVAILABLE') throw e;
      return unlock.refuse(who(req), e, { action });
    }
  };

  for (const [url, a] of Object.entries(assets)) app.get(url, async (_req, reply) => reply.type(a.type).send(a.body));

  app.get('/v1/me', async (req) => {
    let me: Record<string, unknown>;
    try {
      me = unlock.me(await unlock.user(who(req)));
    } catch (err) {
      const e = asPksError(err);
      if (e.code === 'PKS_SERVICE_UNAVAILABLE') throw e;
      return unlock.refuse(who(req), e, { action: 'login' });
    }
    return { ...me, serial: who(req).serial, csrf: csrfOf(who(req).serial!) };
  });

  app.post('/v1/tokens', {
    schema: {
      body: obj(
        {
          ecuType: { type: 'string', minLength: 1, maxLength: 16 },
          uid: { type: 'string', minLength: 2, maxLength: 64 },
          challenge: { type: 'string', minLength: 2, maxLength: 64 },
          permissions: { type: 'array', maxItems: 128, uniqueItems: true, items: { type: 'string', maxLength: 32 } },
          lifetimeSeconds: { type: 'integer', minimum: 1, maximum: 7 * 86_400 },
        },
        ['ecuType', 'uid', 'challenge'],
      ),
    },
    handler: async (req) => unlock.requestToken(who(req), req.body as Parameters<Unlock['requestToken']>[1]),
  });

  app.get('/v1/tokens', { schema: { querystring: QUERY } }, async (req) => {
    await unlock.user(who(req));
    const q = req.query as { ecu?: string; since?: string; limit: number };
    return unlock.tokens({ ...q, user: who(req).cn });
  });

  app.get('/v1/public-keys', async (req) => {
    await unlock.user(who(req));
    return unlock.publicKeys();
  });

  // ---- admins
  app.get('/v1/admin/users', async (req) => {
    await asAdmin(req, 'list-users');
    return unlock.users();
  });
  app.get('/v1/admin/requests', { schema: { querystring: obj({ state: { enum: ['PENDING', 'APPROVED', 'REJECTED'] } }, []) } }, async (req) => {
    await asAdmin(req, 'list-requests');
    return unlock.requests((req.query as { state?: string }).state);
  });
  app.post('/v1/admin/requests', { schema: { body: obj({ cn: NAME, role: { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,31}$' }, accessSeconds: { type: 'integer', minimum: 1, maximum: 5 * 365 * 86_400 } }) } }, async (req) => {
    const by = await asAdmin(req, 'onboard');
    return unlock.onboard(by, req.body as { cn: string; role: string; accessSeconds: number });
  });
  app.post('/v1/admin/requests/:id/approve', { schema: { params: obj({ id: REQ_ID }) } }, async (req) => {
    const by = await asAdmin(req, 'approve');
    return unlock.approve(by, (req.params as { id: string }).id);
  });
  app.post('/v1/admin/requests/:id/reject', { schema: { params: obj({ id: REQ_ID }), body: obj({ reason: { type: 'string', maxLength: 200, pattern: '^[\\x20-\\x7e]*$' } }, []) } }, async (req) => {
    const by = await asAdmin(req, 'reject');
    return unlock.reject(by, (req.params as { id: string }).id, (req.body as { reason?: string }).reason);
  });
  app.post('/v1/admin/users/:cn/revoke', { schema: { params: obj({ cn: NAME }), body: obj({ reason: { type: 'string', maxLength: 200, pattern: '^[\\x20-\\x7e]*$' } }, []) } }, async (req) => {
    const by = await asAdmin(req, 'revoke');
    return unlock.revoke(by, (req.params as { cn: string }).cn, (req.body as { reason?: string }).reason);
  });
  app.post('/v1/admin/users/:cn/certificate', { schema: { params: obj({ cn: NAME }), body: obj({ csr: { type: 'string', maxLength: 16 * 1024 }, passphrase: { type: 'string', minLength: 8, maxLength: 128 } }, []) } }, async (req) => {
    const by = await asAdmin(req, 'certificate');
    const { cn } = req.params as { cn: string };
    const b = req.body as { csr?: string; passphrase?: string };
    if (b.csr !== undefined === (b.passphrase !== undefined)) throw pksError('PKS_BAD_REQUEST', 'give either csr or passphrase (for a PKCS#12)');
    return b.csr !== undefined ? unlock.certifyCsr(by, cn, b.csr) : unlock.certifyPkcs12(by, cn, b.passphrase!);
  });
  app.get('/v1/admin/log', { schema: { querystring: QUERY } }, async (req) => {
    await asAdmin(req, 'log');
    return unlock.logQuery(req.query as { user?: string; ecu?: string; since?: string; limit: number });
  });

  await app.ready();
  return {
    app,
    server,
    async listen() {
      await app.listen({ host: cfg.listen.host, port: cfg.listen.port });
      return server.address() as AddressInfo;
    },
    close: () => app.close(),
  };
}
