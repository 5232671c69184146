// The updater's config (/etc/pks/updater.json): where RAUC's system.conf is, the box's
// compatible, how long to drain, what the health check waits for, how to ask for a reboot, and
// (optional) where manifests from the KMS are checked against and when they may install.
import { NAME, PATH, SOCKET_GROUPS } from '../../appliance/schema.js';
import { COMPATIBLE } from '../../appliance/contracts/update.js';

export interface UpdaterConfig {
  boxId: string;
  stateDir: string;
  rauc: { conf: string };
  compatible: string;
  /** TPM2TOOLS_TCTI for the floor; default tpm2-tools' own (the kernel resource manager) */
  tcti?: string;
  health: { units: string[]; keystore: boolean; vault: boolean; timeoutSeconds: number; intervalSeconds: number };
  drain: { retryAfterSeconds: number; timeoutSeconds: number };
  /** a file whose creation pks-update-reboot.path turns into `systemctl reboot` */
  rebootFile: string;
  /** pair groups of the caller sockets (sysusers.d/pks.conf: pks-updater-<caller>) */
  ipc: { groups?: Record<string, number> };
  manifests?: {
    /** the pinned KMS CA: a manifest's signer must be issued by it */
    kmsCaFile: string;
    /** node-cron: when a downloaded bundle may install on its own */
    maintenanceCron: string;
    maintenanceWindowSeconds: number;
    /** largest bundle the box accepts */
    maxBytes: number;
  };
}

export const updaterSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['boxId', 'stateDir'],
  properties: {
    boxId: NAME,
    stateDir: PATH,
    rauc: { type: 'object', additionalProperties: false, default: {}, properties: { conf: { ...PATH, default: '/etc/rauc/system.conf' } } },
    compatible: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$', default: COMPATIBLE },
    tcti: { type: 'string', minLength: 3, maxLength: 200 },
    health: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        units: {
          type: 'array',
          maxItems: 32,
          items: { type: 'string', pattern: '^[a-z0-9@._-]{1,64}\\.service$' },
          default: ['pks-vault.service', 'pks-keystore.service', 'pks-tester-api.service', 'pks-uplink.service', 'pks-sentinel.service'],
        },
        keystore: { type: 'boolean', default: true },
        // issue 12: the vault's gate open on the new slot; also what makes the updater get the
        // bundle's measurement authorised before it installs (vault socket updater.sock)
        vault: { type: 'boolean', default: true },
        timeoutSeconds: { type: 'number', minimum: 1, maximum: 3600, default: 300 },
        intervalSeconds: { type: 'number', minimum: 0.1, maximum: 60, default: 5 },
      },
    },
    drain: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        retryAfterSeconds: { type: 'integer', minimum: 1, maximum: 3600, default: 120 },
        timeoutSeconds: { type: 'number', minimum: 0, maximum: 3600, default: 120 },
      },
    },
    rebootFile: { ...PATH, default: '/run/pks/updater/reboot' },
    ipc: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { groups: SOCKET_GROUPS },
    },
    manifests: {
      type: 'object',
      additionalProperties: false,
      required: ['kmsCaFile'],
      properties: {
        kmsCaFile: PATH,
        maintenanceCron: { type: 'string', minLength: 9, maxLength: 100, default: '0 2 * * 0' },
        maintenanceWindowSeconds: { type: 'integer', minimum: 60, maximum: 86_400, default: 7200 },
        maxBytes: { type: 'integer', minimum: 1 << 20, maximum: 8 << 30, default: 2 << 30 },
      },
    },
  },
} as const;
