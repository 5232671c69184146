// RAUC pre-install handler (system.conf [handlers] pre-install): the version floor. RAUC runs it
// after the bundle's signature and compatible were checked and before any slot is touched; a
// non-zero exit aborts the install. It reads the svn from the verified bundle's pks-release under
// $RAUC_BUNDLE_MOUNT_POINT and the floor from the TPM ($TPM2TOOLS_TCTI, on the box the kernel's
// resource manager). The coded line on stderr is what the updater maps to its error.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { asPksError, pksError } from '../../appliance/errors.js';
import { MAX_SVN_STEP } from '../../appliance/contracts/update.js';
import { parseRelease } from './bundle.js';
import { readFloor } from './floor.js';

async function main(): Promise<void> {
  const mount = process.env.RAUC_BUNDLE_MOUNT_POINT;
  if (!mount) throw pksError('PKS_UPDATE_CORRUPT', 'RAUC_BUNDLE_MOUNT_POINT not set');
  const info = parseRelease(readFileSync(path.join(mount, 'pks-release'), 'utf8'));
  const floor = await readFloor(process.env.TPM2TOOLS_TCTI);
  if (info.svn < floor) throw pksError('PKS_UPDATE_DOWNGRADE', `svn ${info.svn} of ${info.version} is below the version floor ${floor}`);
  if (info.svn - floor > MAX_SVN_STEP) throw pksError('PKS_UPDATE_CORRUPT', `svn ${info.svn} jumps more than ${MAX_SVN_STEP} above the floor ${floor}`);
  process.stderr.write(`pks pre-install: ${info.version} svn ${info.svn} >= floor ${floor}\n`);
}

try {
  await main();
} catch (err) {
  const e = asPksError(err);
  process.stderr.write(`${e.code}: ${e.detail}\n`);
  // RAUC reports only "handler error": the updater reads the code from here
  const dir = process.env.PKS_UPDATE_REPORT_DIR ?? '/run/pks/updater';
  if (existsSync(dir)) {
    try {
      writeFileSync(path.join(dir, 'pre-install.json'), JSON.stringify({ code: e.code, detail: e.detail, at: new Date().toISOString() }));
    } catch {
      // the exit code alone still refuses the bundle
    }
  }
  process.exitCode = 1;
}
