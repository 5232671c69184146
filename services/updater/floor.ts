// The version floor in the TPM (appliance/contracts/update.ts): read it, raise it. tpm2-tools
// through a TCTI (the box: device:/dev/tpmrm0; tests: swtpm). Every failure is coded and fails
// closed: an unreadable floor refuses the install, it never counts as zero.
import { execFile } from 'node:child_process';
import { pksError } from '../../appliance/errors.js';
import { MAX_SVN_STEP, VERSION_FLOOR_NV_ATTRIBUTES, VERSION_FLOOR_NV_INDEX } from '../../appliance/contracts/update.js';

const hexIndex = `0x${VERSION_FLOOR_NV_INDEX.toString(16).padStart(8, '0')}`;

function tpm2(tool: string, args: string[], tcti: string | undefined): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(tool, args, { env: { ...process.env, ...(tcti ? { TPM2TOOLS_TCTI: tcti } : {}) }, encoding: 'buffer', timeout: 15_000, maxBuffer: 1 << 16 }, (err, stdout, stderr) => {
      if (err) reject(Object.assign(new Error(`${tool}: ${stderr.toString().trim().split('\n').pop() ?? err.message}`), { stderr: stderr.toString() }));
      else resolve(stdout);
    });
  });
}

/** The floor, or 0 when the counter exists but was never incremented. */
export async function readFloor(tcti?: string): Promise<number> {
  let out: Buffer;
  try {
    out = await tpm2('tpm2_nvread', [hexIndex, '-C', 'o', '-s', '8'], tcti);
  } catch (e) {
    const text = (e as { stderr?: string }).stderr ?? '';
    // TPM_RC_NV_UNINITIALIZED (0x14a): defined, never incremented
    if (/0x14a|uninitiali[sz]ed/i.test(text)) return 0;
    throw pksError('PKS_UPDATE_FLOOR', `version floor unreadable: ${(e as Error).message.slice(0, 200)}`);
  }
  if (out.length !== 8) throw pksError('PKS_UPDATE_FLOOR', `version floor has ${out.length} bytes, not 8`);
  const v = out.readBigUInt64BE(0);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw pksError('PKS_UPDATE_FLOOR', 'version floor out of range');
  return Number(v);
}

/** Raises the floor to `svn` (never lowers it: a counter cannot); returns the new value. */
export async function raiseFloor(svn: number, tcti?: string): Promise<number> {
  let v = await readFloor(tcti);
  if (svn - v > MAX_SVN_STEP) throw pksError('PKS_UPDATE_FLOOR', `svn ${svn} is more than ${MAX_SVN_STEP} above the floor ${v}`);
  while (v < svn) {
    try {
      await tpm2('tpm2_nvincrement', [hexIndex, '-C', 'o'], tcti);
    } catch (e) {
      throw pksError('PKS_UPDATE_FLOOR', `version floor not raised: ${(e as Error).message.slice(0, 200)}`);
    }
    const next = await readFloor(tcti);
    if (next <= v) throw pksError('PKS_UPDATE_FLOOR', 'version floor did not move');
    v = next;
  }
  return v;
}

/** What setup does once (a-image owns the real setup; tests and the dev VM use this). */
export async function defineFloor(tcti?: string): Promise<void> {
  try {
    await tpm2('tpm2_nvdefine', [hexIndex, '-C', 'o', '-s', '8', '-a', VERSION_FLOOR_NV_ATTRIBUTES], tcti);
    await tpm2('tpm2_nvincrement', [hexIndex, '-C', 'o'], tcti);
  } catch (e) {
    throw pksError('PKS_UPDATE_FLOOR', `version floor not defined: ${(e as Error).message.slice(0, 200)}`);
  }
}
