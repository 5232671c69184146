// Entry point of pks-measure.service: measures the application and its configuration into
// PCR 15 before the vault starts (see measure.ts), logs the digests, exits non-zero when the
// TPM cannot be used so that the failure shows in `systemctl status` (the vault Requires= this
// unit; its gate, services/vault/gate.ts, decides whether keys are served).
// With --live (pks-measure-live.service, on its timer): re-measures without extending and writes
// the live measurement the vault's gate follows (measureLive).
// Env: PKS_TPM_TCTI (default device:/dev/tpmrm0), PKS_MEASUREMENTS (default /run/pks/measurements.json),
// PKS_LIVE_MEASUREMENTS (default /run/pks/live-measurements.json).
import { asPksError } from '../../appliance/errors.js';
import { LIVE_MEASUREMENT_PATH } from '../../appliance/contracts/measurement.js';
import { DEFAULT_TCTI, MEASUREMENTS_PATH, measureBoot, measureLive } from './measure.js';

const tcti = process.env.PKS_TPM_TCTI ?? DEFAULT_TCTI;
const livePath = process.env.PKS_LIVE_MEASUREMENTS ?? LIVE_MEASUREMENT_PATH;
try {
  if (process.argv.includes('--live')) {
    const live = await measureLive({ tcti, livePath, ...(process.env.PKS_MEASURE_ROOT ? { rootfs: process.env.PKS_MEASURE_ROOT } : {}) });
    process.stdout.write(`pks-measure: live ${live.trees.map((t) => `${t.name} sha256:${t.digest}`).join(' ')}\n`);
    process.exit(0);
  }
  const log = await measureBoot({ tcti, livePath, logPath: process.env.PKS_MEASUREMENTS ?? MEASUREMENTS_PATH });
  for (const e of log.events) process.stdout.write(`pks-measure: ${e.name} ${e.path} ${e.files} files sha256:${e.digest} -> PCR ${log.pcr}\n`);
  process.stdout.write(`pks-measure: PCR ${log.pcr} = ${log.pcrValue}\n`);
} catch (err) {
  const e = asPksError(err);
  process.stderr.write(`pks-measure: ${e.code}: ${e.detail}\n`);
  process.exitCode = 1;
}
