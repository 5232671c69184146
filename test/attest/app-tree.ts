// A temporary application tree as the box has it (/usr/lib/pks, /etc/pks) and pks-measure's
// measurements of it on a swtpm: the boot measurement into PCR 15 and the live re-measurement,
// written where only root may (the vault's gate refuses anything else). For the issue 12 tests.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { measureBoot, measureLive } from '../../services/attest/measure.js';
import { openPath } from '../../scripts/plant/users.js';
import type { Swtpm } from './swtpm.js';

export interface AppTree {
  readonly rootfs: string;
  /** one service file of the tree, to change and restore */
  readonly file: string;
  readonly original: string;
  /** the live measurement the vault reads (config `gate.liveFile`) */
  readonly liveFile: string;
  /** pks-measure at boot: extends PCR 15 (after a TPM restart), writes both logs */
  boot(): Promise<void>;
  /** pks-measure --live */
  remeasure(now?: () => Date): ReturnType<typeof measureLive>;
}

export async function makeAppTree(dir: string, tpm: Swtpm, service = 'tester-api'): Promise<AppTree> {
  const rootfs = path.join(dir, 'rootfs');
  const file = path.join(rootfs, `usr/lib/pks/dist/services/${service}/main.js`);
  const original = 'serve()\n';
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, original);
  await mkdir(path.join(rootfs, 'etc/pks/credentials'), { recursive: true });
  await writeFile(path.join(rootfs, `etc/pks/${service}.json`), '{"slot":0}\n');
  // root's, as /run/pks is on the box; the vault's user may pass through to read it
  const liveFile = path.join(dir, 'measure', 'live-measurements.json');
  await mkdir(path.dirname(liveFile), { mode: 0o755 });
  openPath(path.dirname(liveFile), '/');
  const tree: AppTree = {
    rootfs,
    file,
    original,
    liveFile,
    boot: async () => void (await measureBoot({ rootfs, tcti: tpm.tcti, logPath: path.join(dir, 'measure', 'measurements.json'), livePath: liveFile })),
    remeasure: (now) => measureLive({ rootfs, tcti: tpm.tcti, livePath: liveFile, ...(now ? { now } : {}) }),
  };
  await tree.boot();
  return tree;
}
