// The tester API's config: where it listens, its TLS material (the server key is the systemd
// credential `tls-key`, never in the config) and the limits that keep one tester (or one source
// address) from starving the others.
import { METRICS_CONFIG, type MetricsListen } from '../../appliance/metrics.js';
import { readFileSync } from 'node:fs';
import { readCredential, type DeepReadonly } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { PATH, SOCKET_GROUPS } from '../../appliance/schema.js';

const FILE = PATH;
const int = (minimum: number, maximum: number, dflt: number) => ({ type: 'integer', minimum, maximum, default: dflt }) as const;

export interface TesterApiConfig {
  listen: { host: string; port: number };
  tls: {
    /** PEM chain of the server certificate */
    cert: string;
    /** development fallback for the `tls-key` credential */
    keyFile?: string;
    /** PEM of the tester CA: only its certificates get in */
    ca: string;
    ciphers: string;
    /** TLS session ticket keys are replaced this often (old tickets then do a full handshake) */
    ticketRotateSeconds: number;
    sessionTimeoutSeconds: number;
    keepAliveSeconds: number;
  };
  limits: {
    /** per tester: sustained requests per second and burst */
    requestsPerSecond: number;
    burst: number;
    /** per tester: NEW reservations per hour (retries of a reservation do not count) */
    newReservationsPerHour: number;
    /**
     * per source address: FAILED or unauthenticated TLS handshakes per window. Past it, new
     * connections from that address are refused unless it holds an authenticated session
     * (a good tester behind the same NAT as an attacker keeps working).
     */
    handshakesPerWindow: number;
    handshakeWindowSeconds: number;
    /** concurrent connections, in all and per source address (beyond: refused at accept) */
    maxConnections: number;
    maxConnectionsPerSource: number;
  };
  /** the HTTP/1.1 layer: every limit answers a coded problem (http-errors.ts) */
  http: {
    /** a whole request (headers and body) must arrive within this */
    requestTimeoutSeconds: number;
    headersTimeoutSeconds: number;
    /** request line + headers; beyond: 431 PKS_HEADERS_TOO_LARGE */
    maxHeaderBytes: number;
    /** a TLS handshake must be done within this */
    handshakeTimeoutSeconds: number;
  };
  /** groups: numeric group per caller of its own status socket (the sentinel's pair group) */
  ipc: { timeoutMs: number; groups?: Record<string, number> };
  /** the OpenMetrics endpoint for the plant's Prometheus (issue 16 §4); none when absent */
  metrics?: MetricsListen;
}

/** Modern AEAD suites with forward secrecy for TLS 1.2; TLS 1.3 suites are always on. */
export const DEFAULT_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

export const testerApiSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['tls'],
  properties: {
    listen: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', minLength: 1, maxLength: 253, pattern: '^[0-9A-Za-z.:_-]+$', default: '0.0.0.0' },
        port: int(0, 65535, 8443),
      },
    },
    tls: {
      type: 'object',
      additionalProperties: false,
      required: ['cert', 'ca'],
      properties: {
        cert: FILE,
        keyFile: FILE,
        ca: FILE,
        ciphers: { type: 'string', minLength: 1, maxLength: 1024, pattern: '^[A-Za-z0-9_:@+!=-]+$', default: DEFAULT_CIPHERS },
        ticketRotateSeconds: int(60, 7 * 86400, 12 * 3600),
        sessionTimeoutSeconds: int(60, 86400, 8 * 3600),
        keepAliveSeconds: int(5, 3600, 65),
      },
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        requestsPerSecond: int(1, 100_000, 50),
        burst: int(1, 100_000, 100),
        newReservationsPerHour: int(1, 10_000_000, 2000),
        handshakesPerWindow: int(1, 100_000, 60),
        handshakeWindowSeconds: int(1, 3600, 10),
        maxConnections: int(1, 1_000_000, 1024),
        maxConnectionsPerSource: int(1, 1_000_000, 64),
      },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        requestTimeoutSeconds: int(1, 600, 30),
        headersTimeoutSeconds: int(1, 600, 10),
        maxHeaderBytes: int(1024, 65_536, 16_384),
        handshakeTimeoutSeconds: int(1, 600, 10),
      },
    },
    metrics: METRICS_CONFIG,
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        timeoutMs: int(100, 60_000, 5000),
        groups: SOCKET_GROUPS,
      },
    },
  },
} as const;

export interface TlsMaterial {
  cert: string;
  key: string;
  ca: string;
}

function readPem(file: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw pksError('PKS_CONFIG_UNREADABLE', `${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  if (!text.includes('-----BEGIN ')) throw pksError('PKS_CONFIG_INVALID', `${what} ${file}: not PEM`);
  return text;
}

/** The server's certificate, key (credential `tls-key`) and the tester CA, read once at start. */
export function loadTlsMaterial(cfg: DeepReadonly<TesterApiConfig>): TlsMaterial {
  return {
    cert: readPem(cfg.tls.cert, 'tls.cert'),
    key: readCredential('tls-key', cfg.tls.keyFile) + '\n',
    ca: readPem(cfg.tls.ca, 'tls.ca'),
  };
}
