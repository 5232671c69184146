// The updater's version floor (issue 12, item 4): a TPM NV index of type counter (nt=1), defined
// once at setup. A TPM counter only goes up (TPM2_NV_Increment), survives power cuts and
// re-installs of the disk, and cannot be undefined without the owner hierarchy, so an update
// below the floor is refused even if the disk was rolled back. The updater raises it after a
// successful boot of a new version.
import { execFile } from 'node:child_process';
import { pksError } from '../../appliance/errors.js';
import { VERSION_FLOOR_NV_INDEX } from '../../appliance/contracts/update.js';
import { tpm2 } from './measure.js';

/** The owner-range NV index of the PKS version floor, the one the updater's pre-install handler reads. */
export const VERSION_FLOOR_NV = `0x${VERSION_FLOOR_NV_INDEX.toString(16).padStart(8, '0')}`;

/** Setup: defines the counter and moves it off its uninitialised state (value 1). Idempotent. */
export async function defineVersionCounter(tcti: string, index = VERSION_FLOOR_NV): Promise<bigint> {
  const exists = await tpm2('tpm2_nvreadpublic', [index], tcti).then(
    () => true,
    () => false,
  );
  if (!exists) {
    await tpm2('tpm2_nvdefine', [index, '-C', 'o', '-s', '8', '-a', 'ownerread|ownerwrite|nt=1'], tcti);
    await tpm2('tpm2_nvincrement', ['-C', 'o', index], tcti);
  }
  const pub = await tpm2('tpm2_nvreadpublic', [index], tcti);
  // a same-numbered index of another type would let the floor be rewritten downwards
  if (!/friendly:.*\bnt=0x1\b/.test(pub)) throw pksError('PKS_CONFIG_INVALID', `NV ${index} exists and is not a counter`);
  return readVersionCounter(tcti, index);
}

export async function readVersionCounter(tcti: string, index = VERSION_FLOOR_NV): Promise<bigint> {
  const b = await new Promise<Buffer>((resolve, reject) =>
    execFile('tpm2_nvread', ['-T', tcti, '-C', 'o', '-s', '8', index], { encoding: 'buffer', timeout: 30_000 }, (e, out) =>
      e ? reject(pksError('PKS_SERVICE_UNAVAILABLE', 'TPM: version counter cannot be read', e)) : resolve(out),
    ),
  );
  if (b.length !== 8) throw pksError('PKS_SERVICE_UNAVAILABLE', 'TPM: version counter read failed');
  return b.readBigUInt64BE(0);
}

/** Raises the floor by one; the TPM has no way to lower it. */
export async function incrementVersionCounter(tcti: string, index = VERSION_FLOOR_NV): Promise<bigint> {
  await tpm2('tpm2_nvincrement', ['-C', 'o', index], tcti);
  return readVersionCounter(tcti, index);
}
