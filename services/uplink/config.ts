// The uplink's config: who the box is on the MQTT link, where the broker is, the pinned ops
// key, and when to talk to the KMS. The MQTT client key is a credential (`mqtt-key`), never in
// the config itself.
import { NAME, PATH, SOCKET_GROUPS, mqttConnection } from '../../appliance/schema.js';

export type SyncMode = 'always' | 'windows';

export interface Schedule {
  mode: SyncMode;
  /** node-cron expression opening a sync window (mode windows) */
  cron: string;
  /** how long a window stays open */
  windowSeconds: number;
}

export interface UplinkConfig {
  /** the box id = the CN of its MQTT client certificate (box-<id>) */
  boxId: string;
  /** small persistent state: last command seq, pending re-orders, schedule set by ops */
  stateDir: string;
  mqtt: {
    host: string;
    port: number;
    caFile: string;
    certFile: string;
    keyFile?: string;
    /** CA that issues the box client certificates the broker accepts (rotate-cert checks the
     * new one against it); default caFile, the dev broker's CA does both */
    clientCaFile?: string;
    sessionExpirySeconds: number;
    keepaliveSeconds: number;
    reconnectSeconds: number;
  };
  /** PEM of the ops command-signing public key pinned at setup */
  opsPublicKeyFile: string;
  /** the pinned KMS CA (as the keystore's kmsCa): acks, cert and sync answers and batch chunks
   * must be signed by a signer it issued */
  kmsCaFile: string;
  /** numeric group per caller of its status socket (the sentinel's pair group) */
  ipc?: { groups?: Record<string, number> };
  schedule: Schedule;
  timing: {
    /** housekeeping while connected: re-order check, outbox flush, missing chunks */
    tickSeconds: number;
    /** a batch with missing chunks and no progress for this long: ask for them again */
    chunkTimeoutSeconds: number;
    /** a re-order not answered for this long is repeated (same requestId: the KMS sends the same batch) */
    reorderRetrySeconds: number;
    /** how long to wait for the KMS's ack of a verification file */
    ackTimeoutSeconds: number;
    statusSeconds: number;
    /** rotate-cert: how long to wait for the KMS's certificate, and for the reconnect with it */
    certTimeoutSeconds?: number;
    /** at most one alert per code this often; the ones in between are counted */
    alertIntervalSeconds?: number;
  };
  /**
   * issue 12, remote attestation (attestation.ts): a TPM quote for the KMS with every re-order
   * and every `everySeconds`. Absent: the box does not attest (a KMS that requires it sends no stock).
   */
  attest?: { tcti: string; eventLog: string; everySeconds: number; timeoutSeconds: number; command?: string[] };
}

const file = PATH;
export const CRON_SCHEMA = { type: 'string', minLength: 9, maxLength: 100 } as const;

export const uplinkSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'stateDir', 'mqtt', 'opsPublicKeyFile', 'kmsCaFile'],
  properties: {
    boxId: NAME,
    stateDir: file,
    mqtt: mqttConnection(
      {
        clientCaFile: file,
        sessionExpirySeconds: { type: 'integer', minimum: 60, maximum: 4294967295, default: 2_592_000 },
        reconnectSeconds: { type: 'number', minimum: 0.1, maximum: 3600, default: 5 },
      },
      2_592_000,
    ),
    opsPublicKeyFile: file,
    kmsCaFile: file,
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { groups: SOCKET_GROUPS },
    },
    schedule: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        mode: { enum: ['always', 'windows'], default: 'always' },
        cron: { ...CRON_SCHEMA, default: '0 */4 * * *' },
        windowSeconds: { type: 'integer', minimum: 1, maximum: 86_400, default: 300 },
      },
    },
    timing: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        tickSeconds: { type: 'number', minimum: 0.05, maximum: 3600, default: 30 },
        chunkTimeoutSeconds: { type: 'number', minimum: 0.1, maximum: 86_400, default: 120 },
        reorderRetrySeconds: { type: 'number', minimum: 0.5, maximum: 604_800, default: 3600 },
        ackTimeoutSeconds: { type: 'number', minimum: 0.1, maximum: 3600, default: 60 },
        statusSeconds: { type: 'number', minimum: 0.5, maximum: 86_400, default: 300 },
        certTimeoutSeconds: { type: 'number', minimum: 0.5, maximum: 3600, default: 60 },
        alertIntervalSeconds: { type: 'number', minimum: 0, maximum: 86_400, default: 60 },
      },
    },
    attest: {
      type: 'object',
      additionalProperties: false,
      properties: {
        tcti: { type: 'string', pattern: '^(device:/dev/tpmrm?[0-9]|swtpm:host=127\\.0\\.0\\.1,port=[0-9]{1,5})$', default: 'device:/dev/tpmrm0' },
        eventLog: { ...file, default: '/sys/kernel/security/tpm0/binary_bios_measurements' },
        everySeconds: { type: 'number', minimum: 1, maximum: 86_400, default: 600 },
        timeoutSeconds: { type: 'number', minimum: 1, maximum: 600, default: 60 },
        /** the quote tool (services/attest/quote-cli.js) as argv; default this node on it */
        command: { type: 'array', minItems: 1, maxItems: 8, items: { type: 'string', minLength: 1, maxLength: 255 } },
      },
    },
  },
} as const;
