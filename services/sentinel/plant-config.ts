// The sentinel config the plant-in-a-box demo and the e2e tests write: plain SMTP on
// loopback (no auth, so no credential), the box's keystore LMDB and data dirs, and schedules
// fast enough for a demo. The result is validated here, so a demo never starts a sentinel
// on a config the service would refuse.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseSentinelConfig, type SentinelConfig } from './config.js';

export interface PlantSentinelOptions {
  /** Directory for the sentinel's config and data (created). */
  dir: string;
  site?: string;
  boxId: string;
  smtpPort: number;
  /** The keystore's LMDB directory (KeystoreHandle.dataDir), for its map usage. */
  keystoreDataDir?: string;
  /** The keystore's mapSizeMb (scripts/plant/keystore.ts writes 4096). */
  keystoreMapSizeMb?: number;
  /** Services whose sockets must answer; default the ones a box runs: vault and keystore. */
  services?: string[];
  certificates?: { name: string; path: string }[];
  /** Optional uplink status file ({"lastSyncAt": ISO}). */
  uplinkStatusFile?: string;
  /** Read failed tester logins from the tester API's metrics socket. */
  testerApi?: boolean;
  /** Every check and the mail retry run this often. Default 2 s (6-field cron). */
  everySeconds?: number;
  /** Pool → critical stock level (default: minimum / 4). */
  stockCritical?: Record<string, number>;
  from?: string;
  to?: string[];
}

export function plantSentinelConfig(o: PlantSentinelOptions): SentinelConfig {
  const every = o.everySeconds ?? 2;
  if (!Number.isInteger(every) || every < 1 || every > 59) throw new RangeError('everySeconds: 1..59');
  const expr = every === 1 ? '* * * * * *' : `*/${every} * * * * *`;
  const cfg = {
    site: o.site ?? 'plant-demo',
    boxId: o.boxId,
    dataDir: path.join(o.dir, 'data'),
    schedules: { health: expr, stock: expr, storage: expr, certificates: expr, uplink: expr, auth: expr, mail: expr },
    // short damping so a demo's raise/resolve shows in seconds; reminders off
    engine: { reminderMinutes: 0, flapMinutes: 0.05, maxMailsPerRun: 10 },
    thresholds: { stockCritical: o.stockCritical ?? {}, storage: { diskWarningBytes: 0, diskCriticalBytes: 0 } },
    mail: {
      host: '127.0.0.1',
      port: o.smtpPort,
      secure: false,
      starttls: 'off',
      from: o.from ?? 'pks-sentinel@plant.example',
      to: { warning: o.to ?? ['plant-it@plant.example'], critical: [] },
      timeoutMs: 5000,
    },
    certificates: o.certificates ?? [],
    ...(o.uplinkStatusFile ? { uplink: { statusFile: o.uplinkStatusFile, maxSyncAgeMinutes: 60 } } : {}),
    ...(o.testerApi ? { authFailures: { testerApi: true } } : {}),
    services: o.services ?? ['vault', 'keystore'],
    storage: { ...(o.keystoreDataDir ? { keystoreDataDir: o.keystoreDataDir } : {}), keystoreMapSizeMb: o.keystoreMapSizeMb ?? 4096, disks: [] },
  };
  parseSentinelConfig(cfg, 'plant sentinel config');
  return cfg as unknown as SentinelConfig;
}

/** Writes `<dir>/sentinel.json` and returns its path (give it as PKS_CONFIG). */
export async function writePlantSentinelConfig(o: PlantSentinelOptions): Promise<string> {
  await mkdir(o.dir, { recursive: true });
  const file = path.join(o.dir, 'sentinel.json');
  await writeFile(file, JSON.stringify(plantSentinelConfig(o), null, 2));
  return file;
}
