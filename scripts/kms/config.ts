// The reference KMS's config (JSON, $PKS_CONFIG or --config): where its state lives, how it
// reaches the broker (as CN `kms`), which key signs batches, where pks-fleet finds it.
import { readFileSync } from 'node:fs';
import { createPrivateKey } from 'node:crypto';
import { readCredential } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';

export interface KmsConfig {
  /** LMDB directory of the KMS state */
  stateDir: string;
  /** directory of the local IPC socket(s) pks-fleet uses: <runDir>/fleet.sock */
  runDir: string;
  mqtt: {
    host: string;
    port: number;
    /** CA that issued the broker certificate */
    caFile: string;
    certFile: string;
    /** PEM key of the `kms` MQTT client (or the systemd credential `kms-mqtt-key`) */
    keyFile?: string;
    clientId: string;
    sessionExpirySeconds: number;
    keepaliveSeconds: number;
  };
  /**
   * The batch signer: a P-256 key and its certificate issued by the KMS CA that boxes pin.
   * Dev: a key file (scripts/pki.sh). The KMS CA key itself is not needed at run time.
   */
  signer: { certFile: string; keyFile?: string };
}

const path = { type: 'string', pattern: '^/.{1,255}$' } as const;

export const kmsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['stateDir', 'runDir', 'mqtt', 'signer'],
  properties: {
    stateDir: path,
    runDir: path,
    mqtt: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'port', 'caFile', 'certFile'],
      properties: {
        host: { type: 'string', minLength: 1, maxLength: 253 },
        port: { type: 'integer', minimum: 1, maximum: 65535 },
        caFile: path,
        certFile: path,
        keyFile: path,
        clientId: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', default: 'kms' },
        sessionExpirySeconds: { type: 'integer', minimum: 0, maximum: 4294967295, default: 1_209_600 },
        keepaliveSeconds: { type: 'integer', minimum: 5, maximum: 3600, default: 30 },
      },
    },
    signer: {
      type: 'object',
      additionalProperties: false,
      required: ['certFile'],
      properties: { certFile: path, keyFile: path },
    },
  },
} as const;

export function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    throw pksError('PKS_CONFIG_INVALID', `${what}: cannot read ${file}`);
  }
}

export function loadSigner(cfg: KmsConfig['signer']): { key: ReturnType<typeof createPrivateKey>; certPem: string } {
  const pem = readCredential('kms-batch-signer-key', cfg.keyFile);
  try {
    return { key: createPrivateKey(pem), certPem: readPem(cfg.certFile, 'signer certificate') };
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith('PKS_')) throw e;
    throw pksError('PKS_CONFIG_INVALID', 'batch signer key is not a PEM private key');
  }
}
