// The answers of `pksctl setup` (issue 16): one JSON document, from a file (--answers) or built
// by the prompts, checked by one schema (ajv through appliance/config.ts) and then by the checks
// a schema cannot say (addresses, testers' pools, files that must exist and be what they claim).
// Every check runs before the first step, so bad answers change nothing. The answers hold no
// secret: PINs are made on the box and sealed, a joined token's PIN comes from a file.
import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import type { SchemaObject } from 'ajv';
import { compileChecker, makeAjv } from '../config.js';
import { isPksError, pksError } from '../errors.js';
import { parseJsonOr } from '../json.js';
import { NAME, PATH, POOL } from '../schema.js';
import { validateMailerConfig } from '../../services/sentinel/mailer.js';
import { keystoreSchema } from '../../services/keystore/config.js';

export interface SetupAnswers {
  v: 1;
  plant: string;
  box: string;
  network: {
    interface: string;
    mode: 'dhcp' | 'static';
    address?: string;
    gateway?: string;
    dns?: string[];
    testerVlan?: { id: number; name: string; address: string };
  };
  time: { ntp: string[] };
  tpm: { tcti: string; pcrSigningKey: string; signedPolicy: string };
  hsm: { module: string; tokenLabel: string; mode: 'new' | 'join'; pinFile?: string; softhsm2Conf?: string };
  smtp: { host: string; port: number; starttls: 'required' | 'opportunistic' | 'off'; from: string; to: string[]; caFile?: string };
  kms: { enrolSocket: string; caFile: string; broker: { host: string; port: number; caFile: string } };
  testers: { ca: string; first: { cn: string; station: string; pools: string[]; expires: string }[] };
  pools: { pool: string; minimum: number; reorder: number; critical?: number }[];
  quotas: { openPerTester: number; testerPerHour: number; poolPerHour: number };
}

const IFNAME = { type: 'string', pattern: '^[A-Za-z][A-Za-z0-9_.-]{0,14}$' } as const;
const IPV4 = { type: 'string', pattern: '^\\d{1,3}(\\.\\d{1,3}){3}$' } as const;
const CIDR4 = { type: 'string', pattern: '^\\d{1,3}(\\.\\d{1,3}){3}/\\d{1,2}$' } as const;
const HOST = { type: 'string', pattern: '^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$' } as const;
const MAIL = { type: 'string', pattern: '^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}$' } as const;

/** Field schemas, named so the prompts validate each answer with the very rule the file gets. */
export const FIELDS = {
  name: NAME,
  ifname: IFNAME,
  ipv4: IPV4,
  cidr4: CIDR4,
  host: HOST,
  mail: MAIL,
  path: PATH,
  pool: POOL,
  port: { type: 'integer', minimum: 1, maximum: 65535 },
  vlan: { type: 'integer', minimum: 1, maximum: 4094 },
  label: { type: 'string', pattern: '^[\\x21-\\x7e]([\\x20-\\x7e]{0,30}[\\x21-\\x7e])?$' },
  count: { type: 'integer', minimum: 0, maximum: 100_000_000 },
  tcti: { type: 'string', pattern: '^(device:/[A-Za-z0-9/_.-]{1,200}|swtpm:host=[A-Za-z0-9.-]{1,100},port=\\d{1,5}|mssim:host=[A-Za-z0-9.-]{1,100},port=\\d{1,5})$' },
  date: { type: 'string', format: 'date-time' },
} as const;

export const answersSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['v', 'plant', 'box', 'network', 'time', 'hsm', 'kms', 'smtp', 'testers', 'pools'],
  properties: {
    v: { const: 1 },
    plant: NAME,
    box: NAME,
    network: {
      type: 'object',
      additionalProperties: false,
      required: ['interface', 'mode'],
      properties: {
        interface: IFNAME,
        mode: { enum: ['dhcp', 'static'] },
        address: CIDR4,
        gateway: IPV4,
        dns: { type: 'array', maxItems: 4, items: IPV4 },
        testerVlan: {
          type: 'object',
          additionalProperties: false,
          required: ['id', 'address'],
          properties: { id: FIELDS.vlan, name: { ...IFNAME, default: 'pks-tester' }, address: CIDR4 },
        },
      },
    },
    time: { type: 'object', additionalProperties: false, required: ['ntp'], properties: { ntp: { type: 'array', minItems: 1, maxItems: 8, items: HOST } } },
    tpm: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        tcti: { ...FIELDS.tcti, default: 'device:/dev/tpmrm0' },
        pcrSigningKey: { ...PATH, default: '/usr/lib/pks-image/pcr-signing.pem' },
        signedPolicy: { ...PATH, default: '/usr/lib/pks-image/pcr11-policy.json' },
      },
    },
    hsm: {
      type: 'object',
      additionalProperties: false,
      required: ['mode'],
      properties: {
        module: { ...PATH, default: '/usr/lib/softhsm/libsofthsm2.so' },
        tokenLabel: FIELDS.label,
        mode: { enum: ['new', 'join'] },
        pinFile: PATH,
        softhsm2Conf: PATH,
      },
    },
    kms: {
      type: 'object',
      additionalProperties: false,
      required: ['enrolSocket', 'caFile', 'broker'],
      properties: {
        /** where the KMS takes enrolments: the reference KMS's local socket (scripts/kms) */
        enrolSocket: PATH,
        /** the KMS CA the box pins (batch signer, acks, commands) */
        caFile: PATH,
        broker: { type: 'object', additionalProperties: false, required: ['host', 'port', 'caFile'], properties: { host: HOST, port: FIELDS.port, caFile: PATH } },
      },
    },
    smtp: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port', 'from', 'to'],
      properties: {
        host: HOST,
        port: FIELDS.port,
        starttls: { enum: ['required', 'opportunistic', 'off'], default: 'required' },
        from: MAIL,
        to: { type: 'array', minItems: 1, maxItems: 50, items: MAIL },
        caFile: PATH,
      },
    },
    testers: {
      type: 'object',
      additionalProperties: false,
      required: ['ca'],
      properties: {
        ca: PATH,
        first: {
          type: 'array',
          maxItems: 256,
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['cn', 'station', 'pools', 'expires'],
            properties: { cn: NAME, station: NAME, pools: { type: 'array', minItems: 1, maxItems: 64, items: POOL }, expires: FIELDS.date },
          },
        },
      },
    },
    // the keystore's own rules for pools and quotas: setup writes them into its config
    pools: { ...keystoreSchema.properties.pools, minItems: 1 },
    quotas: keystoreSchema.properties.quotas,
  },
} as const satisfies SchemaObject;

const checkSchema = compileChecker<SetupAnswers>(answersSchema, 'answers', 'PKS_SETUP_ANSWERS');
const bad = (what: string): never => {
  throw pksError('PKS_SETUP_ANSWERS', `answers: ${what}`);
};

const ajv = makeAjv();
/** One field's rule as a prompt validator: undefined when fine, else what is wrong. */
export function fieldError(schema: SchemaObject, value: unknown, what: string): string | undefined {
  const v = ajv.compile(schema);
  return v(value) ? undefined : `${what}: ${v.errors?.[0]?.message ?? 'invalid'}`;
}

export const ipv4Ok = (s: string): boolean => isIPv4(s);
export function cidrOk(s: string): boolean {
  const [ip, len] = s.split('/');
  return isIPv4(ip ?? '') && /^\d{1,2}$/.test(len ?? '') && Number(len) >= 1 && Number(len) <= 32;
}

function readableFile(file: string, what: string, maxBytes = 1 << 20): Buffer {
  let st;
  try {
    st = statSync(file);
  } catch {
    return bad(`${what} ${file} does not exist`);
  }
  if (!st.isFile() || st.size > maxBytes) bad(`${what} ${file} is not a file of at most ${maxBytes} bytes`);
  return readFileSync(file);
}

/** A CA the box pins (tester CA, KMS CA, broker CA) must be a CA certificate that is valid now. */
export function checkCaFile(pem: Buffer, file: string, what: string): X509Certificate {
  let c: X509Certificate;
  try {
    c = new X509Certificate(pem);
  } catch {
    return bad(`${what} ${file} is not a PEM certificate`);
  }
  if (!c.ca) bad(`${what} ${file} is not a CA certificate`);
  const now = Date.now();
  if (Date.parse(c.validFrom) > now || Date.parse(c.validTo) < now) bad(`${what} ${file} is not valid now (${c.validFrom} .. ${c.validTo})`);
  return c;
}

/**
 * Validates answers from anywhere (a file, the prompts, the journal): schema with defaults, then
 * the cross checks and the files. Returns a fresh, defaults-filled copy; throws PKS_SETUP_ANSWERS.
 */
export function checkAnswers(raw: unknown): SetupAnswers {
  const a = checkSchema(structuredClone(raw));
  const n = a.network;
  if (n.mode === 'static') {
    if (!n.address || !cidrOk(n.address)) bad('network.address: a static network needs an IPv4 address/prefix');
    if (n.gateway !== undefined && !ipv4Ok(n.gateway)) bad('network.gateway is not an IPv4 address');
  } else if (n.address !== undefined || n.gateway !== undefined || n.dns !== undefined) bad('network: address, gateway and dns belong to mode static');
  for (const d of n.dns ?? []) if (!ipv4Ok(d)) bad(`network.dns ${d} is not an IPv4 address`);
  if (n.testerVlan) {
    if (!cidrOk(n.testerVlan.address)) bad('network.testerVlan.address is not an IPv4 address/prefix');
    if (n.testerVlan.name === n.interface) bad('network.testerVlan.name must differ from network.interface');
  }
  a.hsm.tokenLabel ??= `pks-${a.box}`.slice(0, 32);
  if (fieldError(FIELDS.label, a.hsm.tokenLabel, 'hsm.tokenLabel')) bad('hsm.tokenLabel: 1..32 printable ASCII characters');
  if (a.hsm.mode === 'join' && !a.hsm.pinFile) bad('hsm.pinFile: joining an existing token needs the file holding its user PIN');
  if (a.hsm.mode === 'new' && a.hsm.pinFile) bad('hsm.pinFile belongs to mode join (a new token gets PINs made on the box)');
  readableFile(a.hsm.module, 'hsm.module', 64 << 20);
  if (a.hsm.softhsm2Conf) readableFile(a.hsm.softhsm2Conf, 'hsm.softhsm2Conf');
  if (a.tpm.tcti.startsWith('device:')) readableFile(a.tpm.tcti.slice('device:'.length), 'tpm.tcti device', Number.MAX_SAFE_INTEGER);
  readableFile(a.tpm.pcrSigningKey, 'tpm.pcrSigningKey');
  readableFile(a.tpm.signedPolicy, 'tpm.signedPolicy');
  try {
    validateMailerConfig({ host: a.smtp.host, port: a.smtp.port, secure: false, starttls: a.smtp.starttls, from: a.smtp.from, to: { warning: a.smtp.to, critical: a.smtp.to }, site: a.plant, box: a.box });
  } catch (e) {
    bad(`smtp: ${isPksError(e) ? e.detail : 'invalid'}`);
  }
  for (const [what, file] of [['kms.caFile', a.kms.caFile], ['kms.broker.caFile', a.kms.broker.caFile]] as const) {
    checkCaFile(readableFile(file, what), file, what);
  }
  if (a.smtp.caFile) readableFile(a.smtp.caFile, 'smtp.caFile');
  checkCaFile(readableFile(a.testers.ca, 'testers.ca'), a.testers.ca, 'testers.ca');
  const pools = new Set<string>();
  for (const p of a.pools) {
    if (pools.has(p.pool)) bad(`pools: ${p.pool} twice`);
    pools.add(p.pool);
    if (p.critical !== undefined && p.critical > p.minimum) bad(`pools: ${p.pool} critical is above its minimum`);
  }
  const cns = new Set<string>();
  for (const t of a.testers.first) {
    if (cns.has(t.cn)) bad(`testers.first: ${t.cn} twice`);
    cns.add(t.cn);
    for (const p of t.pools) if (!pools.has(p)) bad(`testers.first: ${t.cn} is given pool ${p}, which is not in pools`);
    if (Date.parse(t.expires) <= Date.now()) bad(`testers.first: ${t.cn} expires in the past`);
  }
  return a;
}

/** Reads and checks an answer file (JSON, at most 1 MiB). */
export function readAnswersFile(file: string): SetupAnswers {
  return checkAnswers(parseJsonOr('PKS_SETUP_ANSWERS', `answers: ${file}`, readableFile(file, 'answer file')));
}
