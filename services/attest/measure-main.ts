// Entry point of pks-measure.service: measures the application and its configuration into
// PCR 15 before the vault starts (see measure.ts), logs the digests, exits non-zero when the
// TPM cannot be used so that the failure shows in `systemctl status` (the vault then starts
// without a good measurement, and attestation reports it: the decision to serve is not here).
// Env: PKS_TPM_TCTI (default device:/dev/tpmrm0), PKS_MEASUREMENTS (default /run/pks/measurements.json).
import { asPksError } from '../../appliance/errors.js';
import { DEFAULT_TCTI, MEASUREMENTS_PATH, measureBoot } from './measure.js';

try {
  const log = await measureBoot({ tcti: process.env.PKS_TPM_TCTI ?? DEFAULT_TCTI, logPath: process.env.PKS_MEASUREMENTS ?? MEASUREMENTS_PATH });
  for (const e of log.events) process.stdout.write(`pks-measure: ${e.name} ${e.path} ${e.files} files sha256:${e.digest} -> PCR ${log.pcr}\n`);
  process.stdout.write(`pks-measure: PCR ${log.pcr} = ${log.pcrValue}\n`);
} catch (err) {
  const e = asPksError(err);
  process.stderr.write(`pks-measure: ${e.code}: ${e.detail}\n`);
  process.exitCode = 1;
}
