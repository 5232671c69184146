// The sentinel's config: where it keeps its alert store, when each group of checks runs, the
// thresholds, the SMTP relay and what to watch. Validated once at start (JSON schema, then
// the cron expressions and the mail settings) and frozen. The SMTP password never sits in
// the config file: it comes as the systemd credential `smtp-pass`.
import { METRICS_CONFIG, type MetricsListen } from '../../appliance/metrics.js';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadConfig, readCredential, validateConfig, type DeepReadonly } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { NAME, PATH, SOCKET_GROUPS } from '../../appliance/schema.js';
import { validateMailerConfig, type MailerConfig } from './mailer.js';

// node-cron ships CJS and ESM; require() keeps one copy with the scheduler main.ts uses
const require = createRequire(import.meta.url);
const cron = require('node-cron') as typeof import('node-cron');

/** Check groups; each runs on its own schedule, all through one queue (see main.ts). */
export const GROUPS = ['health', 'stock', 'storage', 'certificates', 'uplink', 'auth'] as const;
export type Group = (typeof GROUPS)[number];

export interface SentinelConfig {
  site: string;
  boxId: string;
  /** The sentinel's own LMDB (alert state, history, mail and event outboxes). */
  dataDir: string;
  /** node-cron expressions (5 fields, or 6 with seconds); `mail` retries queued mails. */
  schedules: Record<Group | 'mail', string>;
  engine: { reminderMinutes: number; flapMinutes: number; maxMailsPerRun: number };
  thresholds: {
    certificates: { warningDays: number; criticalDays: number };
    grants: { warningDays: number; criticalDays: number };
    storage: { mapWarningPercent: number; mapCriticalPercent: number; diskWarningBytes: number; diskCriticalBytes: number };
    services: { staleSeconds: number; deadSeconds: number };
    auth: { windowMinutes: number; threshold: number; criticalThreshold?: number };
    /** pool → critical stock level; default: the pool's minimum / 4. */
    stockCritical: Record<string, number>;
    /** Window over which the burn rate (keys per day) is measured. */
    burnWindowHours: number;
  };
  mail: {
    host: string;
    port: number;
    secure: boolean;
    starttls: 'required' | 'opportunistic' | 'off';
    /** With a user, the password is the credential `smtp-pass` ($CREDENTIALS_DIRECTORY). */
    user?: string;
    /** Development fallback for the password when there is no $CREDENTIALS_DIRECTORY. */
    passwordFile?: string;
    from: string;
    to: { warning: string[]; critical: string[] };
    caFile?: string;
    servername?: string;
    timeoutMs?: number;
  };
  certificates: { name: string; path: string }[];
  /**
   * Optional: the uplink's last sync, from its status socket (`service: true`, as on the box:
   * /run/pks/uplink/sentinel.sock) or a status file ({"lastSyncAt": ISO | null}, skipped while absent).
   */
  uplink?: { statusFile?: string; service?: boolean; maxSyncAgeMinutes: number; criticalSyncAgeMinutes?: number };
  /** Tester grants: asked from the keystore when it offers `tester-list`, or read from a file. */
  grants: { keystore: boolean; file?: string };
  /** Optional: failed tester-API logins ({"failures": [{at, source}]}); skipped while absent. */
  authFailures?: { file?: string; testerApi?: boolean };
  /** Measured boot (the appliance image): PCRs and our measurements against the expected values. */
  attest?: { enabled: boolean; tcti?: string; expectedPath?: string; measurementsPath?: string };
  /** Services whose IPC socket must answer. */
  services: string[];
  storage: {
    /** The keystore's LMDB directory, opened read-only for its map usage (skipped if unreadable). */
    keystoreDataDir?: string;
    /**
     * The keystore's configured map size (its mapSizeMb). A read-only reader cannot learn it:
     * lmdb-js grows the map as the file grows, so the reader sees only the current mapping.
     */
    keystoreMapSizeMb: number;
    /** Directories whose file system must keep free space (default: dataDir). */
    disks: string[];
  };
  ipc: { groups?: Record<string, number> };
  /** the OpenMetrics endpoint of the alert states (issue 16 §4); none when absent */
  metrics?: MetricsListen;
}


const CRON = { type: 'string', minLength: 9, maxLength: 100 } as const;
const MIN = '* * * * *';
const days = (w: number, c: number) => ({
  type: 'object',
  additionalProperties: false,
  default: {},
  properties: { warningDays: { type: 'number', minimum: 0, maximum: 3650, default: w }, criticalDays: { type: 'number', minimum: 0, maximum: 3650, default: c } },
});
const ADDRESSES = { type: 'array', maxItems: 50, default: [], items: { type: 'string', maxLength: 254 } } as const;
const SERVICE = { type: 'string', pattern: '^[a-z][a-z0-9-]{0,31}$' } as const;

export const sentinelSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['site', 'boxId', 'dataDir', 'mail'],
  properties: {
    site: NAME,
    boxId: NAME,
    dataDir: PATH,
    schedules: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: Object.fromEntries([...GROUPS, 'mail'].map((g) => [g, { ...CRON, default: MIN }])),
    },
    engine: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        reminderMinutes: { type: 'number', minimum: 0, maximum: 10_080, default: 240 },
        flapMinutes: { type: 'number', minimum: 0, maximum: 1440, default: 15 },
        maxMailsPerRun: { type: 'integer', minimum: 1, maximum: 100, default: 10 },
      },
    },
    thresholds: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        certificates: days(30, 7),
        grants: days(14, 2),
        storage: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            mapWarningPercent: { type: 'number', minimum: 1, maximum: 100, default: 80 },
            mapCriticalPercent: { type: 'number', minimum: 1, maximum: 100, default: 90 },
            diskWarningBytes: { type: 'integer', minimum: 0, default: 2 * 1024 ** 3 },
            diskCriticalBytes: { type: 'integer', minimum: 0, default: 512 * 1024 ** 2 },
          },
        },
        services: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            staleSeconds: { type: 'integer', minimum: 1, maximum: 86_400, default: 120 },
            deadSeconds: { type: 'integer', minimum: 1, maximum: 86_400, default: 600 },
          },
        },
        auth: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            windowMinutes: { type: 'number', minimum: 1, maximum: 1440, default: 10 },
            threshold: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 20 },
            criticalThreshold: { type: 'integer', minimum: 0, maximum: 10_000_000 },
          },
        },
        stockCritical: {
          type: 'object',
          default: {},
          maxProperties: 256,
          propertyNames: { maxLength: 100 },
          additionalProperties: { type: 'integer', minimum: 0, maximum: 100_000_000 },
        },
        burnWindowHours: { type: 'number', minimum: 0.01, maximum: 720, default: 24 },
      },
    },
    mail: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port', 'from', 'to'],
      properties: {
        host: { type: 'string', maxLength: 253 },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        secure: { type: 'boolean', default: false },
        starttls: { enum: ['required', 'opportunistic', 'off'], default: 'required' },
        user: { type: 'string', minLength: 1, maxLength: 256 },
        passwordFile: PATH,
        from: { type: 'string', maxLength: 254 },
        to: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: { warning: ADDRESSES, critical: ADDRESSES },
        },
        caFile: PATH,
        servername: { type: 'string', maxLength: 253 },
        timeoutMs: { type: 'integer', minimum: 100, maximum: 300_000 },
      },
    },
    certificates: {
      type: 'array',
      maxItems: 256,
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'path'],
        properties: { name: NAME, path: PATH },
      },
    },
    uplink: {
      type: 'object',
      additionalProperties: false,
      properties: {
        statusFile: PATH,
        service: { type: 'boolean', default: false },
        maxSyncAgeMinutes: { type: 'number', minimum: 1, maximum: 525_600, default: 60 },
        criticalSyncAgeMinutes: { type: 'number', minimum: 1, maximum: 525_600 },
      },
    },
    grants: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { keystore: { type: 'boolean', default: true }, file: PATH },
    },
    attest: {
      type: 'object',
      additionalProperties: false,
      required: ['enabled'],
      properties: { enabled: { type: 'boolean' }, tcti: { type: 'string', maxLength: 200 }, expectedPath: PATH, measurementsPath: PATH },
    },
    authFailures: {
      type: 'object',
      additionalProperties: false,
      properties: { file: PATH, testerApi: { type: 'boolean', default: false } },
    },
    services: { type: 'array', maxItems: 32, uniqueItems: true, items: SERVICE, default: ['vault', 'keystore', 'tester-api', 'uplink'] },
    storage: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        keystoreDataDir: PATH,
        keystoreMapSizeMb: { type: 'integer', minimum: 64, maximum: 1024 * 1024, default: 16384 },
        disks: { type: 'array', maxItems: 32, items: PATH, default: [] },
      },
    },
    metrics: METRICS_CONFIG,
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        groups: SOCKET_GROUPS,
      },
    },
  },
} as const;

export type Config = DeepReadonly<SentinelConfig>;

/** The checks the schema cannot express: cron syntax, threshold order, sane mail settings. */
function checkRest(c: Config): void {
  for (const [g, expr] of Object.entries(c.schedules)) {
    if (!cron.validate(expr)) throw pksError('PKS_CONFIG_INVALID', `schedules.${g}: not a cron expression`);
  }
  const t = c.thresholds;
  if (t.certificates.criticalDays > t.certificates.warningDays) throw pksError('PKS_CONFIG_INVALID', 'thresholds.certificates: criticalDays > warningDays');
  if (t.grants.criticalDays > t.grants.warningDays) throw pksError('PKS_CONFIG_INVALID', 'thresholds.grants: criticalDays > warningDays');
  if (t.storage.mapCriticalPercent < t.storage.mapWarningPercent) throw pksError('PKS_CONFIG_INVALID', 'thresholds.storage: mapCriticalPercent < mapWarningPercent');
  if (t.storage.diskCriticalBytes > t.storage.diskWarningBytes) throw pksError('PKS_CONFIG_INVALID', 'thresholds.storage: diskCriticalBytes > diskWarningBytes');
  if (t.services.deadSeconds < t.services.staleSeconds) throw pksError('PKS_CONFIG_INVALID', 'thresholds.services: deadSeconds < staleSeconds');
  if (t.auth.criticalThreshold !== undefined && t.auth.criticalThreshold < t.auth.threshold) throw pksError('PKS_CONFIG_INVALID', 'thresholds.auth: criticalThreshold < threshold');
  const u = c.uplink;
  if (u && !u.service && !u.statusFile) throw pksError('PKS_CONFIG_INVALID', 'uplink: needs service: true or a statusFile');
  if (u?.criticalSyncAgeMinutes !== undefined && u.criticalSyncAgeMinutes < u.maxSyncAgeMinutes) throw pksError('PKS_CONFIG_INVALID', 'uplink: criticalSyncAgeMinutes < maxSyncAgeMinutes');
  const names = new Set<string>();
  for (const cert of c.certificates) {
    if (names.has(cert.name)) throw pksError('PKS_CONFIG_INVALID', `certificates: duplicate name ${cert.name}`);
    names.add(cert.name);
  }
}

/** Validates a config object (tests, the demo) the way the service validates its file. */
export function parseSentinelConfig(raw: unknown, source = 'sentinel config'): Config {
  const c = validateConfig<SentinelConfig>(sentinelSchema, raw, source);
  checkRest(c);
  return c;
}

export function loadSentinelConfig(file?: string): Config {
  const c = loadConfig<SentinelConfig>(sentinelSchema, file);
  checkRest(c);
  return c;
}

/** The mailer's config: site and box from the top level, the password from the credential. */
export function mailerConfig(c: Config, credential: (name: string, fallback?: string) => string = readCredential): Readonly<MailerConfig> {
  const m = c.mail;
  let ca: string | undefined;
  if (m.caFile) {
    try {
      ca = readFileSync(m.caFile, 'utf8');
    } catch {
      throw pksError('PKS_CONFIG_INVALID', `mail.caFile: ${m.caFile} cannot be read`);
    }
  }
  const tls = ca !== undefined || m.servername !== undefined ? { ...(ca !== undefined ? { ca } : {}), ...(m.servername ? { servername: m.servername } : {}) } : undefined;
  return validateMailerConfig({
    host: m.host,
    port: m.port,
    secure: m.secure,
    starttls: m.starttls,
    ...(m.user ? { auth: { user: m.user, pass: credential('smtp-pass', m.passwordFile) } } : {}),
    from: m.from,
    to: { warning: [...m.to.warning], critical: [...m.to.critical] },
    site: c.site,
    box: c.boxId,
    ...(tls ? { tls } : {}),
    ...(m.timeoutMs !== undefined ? { timeoutMs: m.timeoutMs } : {}),
  });
}
