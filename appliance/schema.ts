// JSON-schema fragments shared by every service's IPC verbs, HTTP routes and config, so that
// an id or a hex field means the same thing (and has the same limits) everywhere.

/** Batch, record and package ids: printable, no separators we use in keys or AADs. */
export const ID = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,95}$' } as const;
/** Pool ids: `<oem>.<ecu type>.<slot>`. */
export const POOL = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\\.[A-Za-z0-9][A-Za-z0-9_-]{0,31}\\.[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' } as const;
/** ECU certificate profiles: `<oem>.<ecu type>` (issue 9: granted per tester like pools). */
export const CERT_PROFILE = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}\\.[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' } as const;
/** A name for a box, tester or station. */
export const NAME = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' } as const;

/** Base64 of at most `maxBytes` decoded bytes. */
export const b64 = (maxBytes: number) =>
  ({ type: 'string', minLength: 4, maxLength: Math.ceil(maxBytes / 3) * 4, pattern: '^[A-Za-z0-9+/]*={0,2}$' }) as const;

/** Lowercase or uppercase hex of exactly `bytes` bytes. */
export const hex = (bytes: number) => ({ type: 'string', pattern: `^[0-9a-fA-F]{${bytes * 2}}$` }) as const;

/** An absolute file path (config files, certificates, sockets). */
export const PATH = { type: 'string', pattern: '^/.{1,255}$' } as const;

/** A PKCS#11 token: module, token label, PIN file (dev; production uses a credential). */
export const HSM_TOKEN = {
  type: 'object',
  additionalProperties: false,
  required: ['module', 'tokenLabel'],
  properties: {
    module: PATH,
    tokenLabel: { type: 'string', minLength: 1, maxLength: 32 },
    pinFile: PATH,
    softhsm2Conf: PATH,
  },
} as const;

/** An MQTT v5 connection over TLS with a client certificate; `extra` adds side-specific keys. */
export const mqttConnection = (extra: Record<string, unknown>, sessionExpiryDefault: number) =>
  ({
    type: 'object',
    additionalProperties: false,
    required: ['host', 'port', 'caFile', 'certFile'],
    properties: {
      host: { type: 'string', minLength: 1, maxLength: 253 },
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      caFile: PATH,
      certFile: PATH,
      keyFile: PATH,
      sessionExpirySeconds: { type: 'integer', minimum: 0, maximum: 4294967295, default: sessionExpiryDefault },
      keepaliveSeconds: { type: 'integer', minimum: 5, maximum: 3600, default: 30 },
      ...extra,
    },
  }) as const;

/** ipc.groups: each caller's socket goes to its pair group (a gid, from sysusers.d/pks.conf). */
export const SOCKET_GROUPS = { type: 'object', additionalProperties: { type: 'integer', minimum: 0, maximum: 4294967294 } } as const;
