// Writes /etc/pks/<service>.json for the services from the site's settings (PKS_SITE_*
// environment, see setup.sh) and the IPC pair groups' numbers from /etc/group, and checks each
// against the service's own schema first: a box is never set up with a config its service
// would refuse at start.
// Usage: node write-configs.mjs DIR   (DIR: /etc/pks)
import { chmodSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const app = process.env.PKS_APP_DIR ?? '/usr/lib/pks';
const load = (m) => import(path.join(app, 'dist', m));
const { validateConfig } = await load('appliance/config.js');
const { vaultSchema } = await load('services/vault/config.js');
const { keystoreSchema } = await load('services/keystore/config.js');
const { testerApiSchema } = await load('services/tester-api/config.js');
const { uplinkSchema } = await load('services/uplink/config.js');
const { parseSentinelConfig } = await load('services/sentinel/config.js');
const { unlockSchema } = await load('services/unlock/config.js');
const { updaterSchema } = await load('services/updater/config.js');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: write-configs.mjs DIR');
  process.exit(2);
}
const site = (k, dflt) => {
  const v = process.env[`PKS_SITE_${k}`] ?? dflt;
  if (v === undefined || v === '') throw new Error(`site setting ${k} missing`);
  return v;
};
const port = (k) => {
  const n = Number(site(k));
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new Error(`site setting ${k}: not a port`);
  return n;
};

// The pair groups (sysusers.d/pks.conf): the server chgrp's each caller's socket to them.
const gids = new Map(
  readFileSync(process.env.PKS_GROUP_FILE ?? '/etc/group', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(':'))
    .map(([name, , gid]) => [name, Number(gid)]),
);
const groups = (server, callers) =>
  Object.fromEntries(
    callers.map((c) => {
      const g = gids.get(`pks-${server}-${c}`);
      if (g === undefined) throw new Error(`group pks-${server}-${c} missing (systemd-sysusers)`);
      return [c, g];
    }),
  );

const boxId = site('BOX_ID');
const pools = site('POOLS').split(',').filter(Boolean);
const mailTo = site('MAIL_TO').split(',').filter(Boolean);
// unlock tokens: one token key per OEM of the site's pools, each ECU type signed by its OEM's key
const unlockEcuTypes = Object.fromEntries(pools.map((p) => p.split('.')).map(([oem, type]) => [type, { tokenKey: oem.toLowerCase().slice(0, 16) }]));
const unlockTokenKeys = [...new Set(Object.values(unlockEcuTypes).map((e) => e.tokenKey))];

const configs = {
  vault: validateConfig(
    vaultSchema,
    {
      boxId,
      hsm: { module: site('HSM_MODULE', '/usr/lib/softhsm/libsofthsm2.so'), tokenLabel: `pks-${boxId}`.slice(0, 32), softhsm2Conf: '/etc/pks/softhsm2.conf' },
      ipc: { groups: groups('vault', ['keystore', 'tester-api', 'uplink', 'sentinel', 'unlock', 'updater']) },
      unlock: { tokenKeys: unlockTokenKeys },
      // issue 12: no key operation until the live measurement (pks-measure-live.timer) is the signed record
      gate: {},
    },
    'vault.json',
  ),
  keystore: validateConfig(
    keystoreSchema,
    {
      boxId,
      dataDir: '/var/lib/pks/keystore/data',
      kmsCa: '/etc/pks/kms-ca.crt',
      mapSizeMb: Number(site('KEYSTORE_MAP_MB', '1024')),
      pools: pools.map((pool) => ({ pool, minimum: 100, reorder: 500 })),
      audit: { checkpointEvery: 100, checkpointSeconds: 10 },
      // the quotas that protect stock live in the keystore (issue 10); defaults suit a plant line
      quotas: {
        openPerTester: Number(site('OPEN_RESERVATIONS_PER_TESTER', '8')),
        testerPerHour: Number(site('RESERVATIONS_PER_HOUR', '500')),
        poolPerHour: Number(site('POOL_RESERVATIONS_PER_HOUR', '20000')),
      },
      ipc: { groups: groups('keystore', ['tester-api', 'uplink', 'sentinel', 'unlock', 'updater']) },
    },
    'keystore.json',
  ),
  'tester-api': validateConfig(
    testerApiSchema,
    {
      // '::' (dual stack) rather than 0.0.0.0: on 0.0.0.0 fastify lists the interfaces for its
      // log line, which needs AF_NETLINK, which the unit does not allow (uv_interface_addresses fails)
      listen: { host: '::', port: 8443 },
      tls: { cert: '/etc/pks/tls/server.crt', ca: '/etc/pks/tls/tester-ca.crt' },
      limits: { newReservationsPerHour: Number(site('RESERVATIONS_PER_HOUR', '500')) },
      ipc: { groups: groups('tester-api', ['sentinel']) },
    },
    'tester-api.json',
  ),
  uplink: validateConfig(
    uplinkSchema,
    {
      boxId,
      stateDir: '/var/lib/pks/uplink',
      mqtt: { host: site('KMS_HOST'), port: port('KMS_PORT'), caFile: '/etc/pks/uplink/mqtt-ca.crt', certFile: '/etc/pks/uplink/mqtt-client.crt' },
      opsPublicKeyFile: '/etc/pks/uplink/ops-public.pem',
      kmsCaFile: '/etc/pks/kms-ca.crt',
      ipc: { groups: groups('uplink', ['sentinel']) },
      // issue 12: a quote of PCRs 0-15 before every re-order and every hour, made by
      // pks-quote@.service behind /run/pks/quote.sock (the uplink itself has no TPM device)
      attest: { command: ['/usr/bin/node', '/usr/lib/pks/dist/services/attest/quote-client.js'], everySeconds: 3600, timeoutSeconds: 120 },
      // issue 12: a quote of PCRs 0-15 with every re-order and every hour (pks-uplink.service copies the event log)
      attest: { tcti: 'device:/dev/tpmrm0', eventLog: '/run/pks/uplink/firmware-eventlog', everySeconds: 3600, timeoutSeconds: 120 },
    },
    'uplink.json',
  ),
  unlock: validateConfig(
    unlockSchema,
    {
      boxId,
      listen: { host: '::', port: 9443 },
      tls: { cert: '/etc/pks/tls/unlock-server.crt' },
      ecuTypes: unlockEcuTypes,
      ipc: { groups: groups('unlock', ['uplink']) },
    },
    'unlock.json',
  ),
  sentinel: parseSentinelConfig(
    {
      site: site('SITE'),
      boxId,
      dataDir: '/var/lib/pks/sentinel/data',
      thresholds: { storage: { diskWarningBytes: 256 * 1024 ** 2, diskCriticalBytes: 64 * 1024 ** 2 } },
      mail: {
        host: site('SMTP_HOST'),
        port: port('SMTP_PORT'),
        secure: false,
        // STARTTLS required unless the site says otherwise (PKS_SITE_SMTP_STARTTLS=off for a
        // plaintext relay is an explicit choice)
        starttls: site('SMTP_STARTTLS', 'required'),
        from: `pks-${boxId}@${site('MAIL_DOMAIN', 'plant.example')}`,
        to: { warning: mailTo, critical: mailTo },
        timeoutMs: 5000,
      },
      certificates: [{ name: 'tester-api-server', path: '/etc/pks/tls/server.crt' }],
      // every service's sentinel socket, each with its pair group (sysusers.d/pks.conf)
      services: ['vault', 'keystore', 'tester-api', 'uplink'],
      uplink: { service: true, maxSyncAgeMinutes: Number(site('UPLINK_MAX_SYNC_AGE_MINUTES', '360')) },
      authFailures: { testerApi: true },
      storage: { keystoreMapSizeMb: Number(site('KEYSTORE_MAP_MB', '1024')), disks: ['/var/lib/pks'] },
      ipc: { groups: {} },
    },
    'sentinel.json',
  ),
  // skipped by its unit where the image has no RAUC config (no A/B layout)
  updater: validateConfig(updaterSchema, { boxId, stateDir: '/var/lib/pks/updater', ipc: { groups: groups('updater', ['uplink']) } }, 'updater.json'),
};

for (const [name, cfg] of Object.entries(configs)) {
  const file = path.join(dir, `${name}.json`);
  writeFileSync(`${file}.tmp`, JSON.stringify(cfg, null, 2) + '\n');
  // readable by the service users (no secrets here); explicit, whatever the caller's umask
  chmodSync(`${file}.tmp`, 0o644);
  renameSync(`${file}.tmp`, file);
}
