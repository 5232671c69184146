// The reference KMS's config (JSON, $PKS_CONFIG or --config): where its state lives, how it
// reaches the broker (as CN `kms`), which key signs batches (signer.ts), which CA issues box
// MQTT client certificates on rotate-cert (client-ca.ts), where pks-fleet finds it.
import type { SignerConfig } from './signer.js';
import { HSM_TOKEN, PATH, mqttConnection } from '../../appliance/schema.js';

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
   * `hsm`: the key lives in the KMS's own PKCS#11 token (generated there once); `ca` lets the
   * KMS issue the matching certificate itself. Else a key file (scripts/pki.sh).
   */
  signer: SignerConfig;
  /**
   * The CA the broker trusts for client certificates, with its key: lets the KMS answer a
   * box's rotate-cert CSR. Without it, CSRs are refused (PKS_SERVICE_UNAVAILABLE).
   */
  clientCa?: { certFile: string; keyFile: string; days: number };
  /** issue 16 §3: where the client CA's CRL goes, and the broker's pid file to SIGHUP after it */
  crl?: { file: string; hupPidFile?: string };
  /**
   * issue 12: stock only for attested boxes (attest.ts). The TPM vendor CAs the EK certificates
   * must chain to, the reference values the build signed and the build's public key, and how
   * long a good quote lets a box get stock. Without it every box gets stock (development).
   * `manifestsDir`: the build-signed measurement manifests (`*.json`) of the releases boxes may
   * run after a signed update (read at every quote; without it only the enrolled pks-app counts);
   * `compatible`: only manifests of that compatible count.
   */
  attest?: { ekCaFiles: string[]; referenceFile: string; buildKeyFile: string; windowSeconds: number; nonceSeconds: number; stateFile?: string; manifestsDir?: string; compatible?: string };
}

const path = PATH;

export const kmsSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['stateDir', 'runDir', 'mqtt', 'signer'],
  properties: {
    stateDir: path,
    runDir: path,
    mqtt: mqttConnection({ clientId: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$', default: 'kms' } }, 1_209_600),
    signer: {
      type: 'object',
      additionalProperties: false,
      required: ['certFile'],
      properties: {
        certFile: path,
        keyFile: path,
        hsm: HSM_TOKEN,
        ca: { type: 'object', additionalProperties: false, required: ['certFile', 'keyFile'], properties: { certFile: path, keyFile: path } },
        days: { type: 'integer', minimum: 1, maximum: 3650 },
      },
    },
    clientCa: {
      type: 'object',
      additionalProperties: false,
      required: ['certFile', 'keyFile'],
      properties: { certFile: path, keyFile: path, days: { type: 'integer', minimum: 1, maximum: 3650, default: 365 } },
    },
    crl: { type: 'object', additionalProperties: false, required: ['file'], properties: { file: path, hupPidFile: path } },
    attest: {
      type: 'object',
      additionalProperties: false,
      required: ['ekCaFiles', 'referenceFile', 'buildKeyFile'],
      properties: {
        ekCaFiles: { type: 'array', minItems: 1, maxItems: 32, items: path },
        referenceFile: path,
        buildKeyFile: path,
        windowSeconds: { type: 'integer', minimum: 10, maximum: 30 * 86_400, default: 3600 },
        nonceSeconds: { type: 'integer', minimum: 5, maximum: 600, default: 60 },
        stateFile: path,
        manifestsDir: path,
        compatible: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
      },
    },
  },
} as const;
