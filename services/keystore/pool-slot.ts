// Slots are bound. A pool is "<oem>.<ecu type>.<slot>" and its keys may only ever be written
// into that SHE slot: the slot part names the key id ("4", "k4", "key4", "KEY_4"), the import
// refuses a batch whose SHE key id differs, and every chunk of a batch must carry the same SHE
// parameters as its first. Two pools aimed at the same (OEM, ECU type, slot), spelled apart
// ("oem1.bcm.4" and "OEM1.bcm.key4"), would hand one ECU slot two keys with unrelated counters:
// the configuration and the pool-set command refuse the second.
import { pksError } from '../../appliance/errors.js';

/** The SHE key id a pool's name binds it to, or undefined if its slot part names none. */
export function poolSlot(pool: string): number | undefined {
  const m = /^(?:k|key|key_)?0*(\d{1,2})$/i.exec(pool.split('.')[2] ?? '');
  const n = m ? Number(m[1]) : NaN;
  return n >= 1 && n <= 14 ? n : undefined;
}

/** (OEM, ECU type, slot) as one comparable string. */
export function poolTarget(pool: string): string {
  const [oem = '', ecu = '', slot = ''] = pool.toLowerCase().split('.');
  return `${oem}.${ecu}.${poolSlot(pool) ?? slot}`;
}

/** Throws PKS_CONFIG_INVALID naming both pools when two aim at the same ECU slot. */
export function checkDistinctTargets(pools: readonly string[], what = 'pools'): void {
  const seen = new Map<string, string>();
  for (const p of pools) {
    const t = poolTarget(p);
    const other = seen.get(t);
    if (other !== undefined && other !== p) throw pksError('PKS_CONFIG_INVALID', `${what}: ${p} and ${other} aim at the same OEM, ECU type and slot`);
    if (other === p) throw pksError('PKS_CONFIG_INVALID', `${what}: ${p} is listed twice`);
    seen.set(t, p);
  }
}

export interface SheParams {
  keyId: number;
  authKeyId: number;
  counter: number;
  flags: number;
  auth: string | Buffer;
}

/**
 * The import's checks on a chunk's SHE parameters: bound to the pool's slot, same as the
 * batch's. The auth key's ciphertext is not compared: a re-sent chunk seals it afresh (a new
 * nonce), and the vault opens it under the batch id either way.
 */
export function checkChunkShe(pool: string, batchId: string, she: SheParams, first?: SheParams): void {
  const slot = poolSlot(pool);
  if (slot === undefined) throw pksError('PKS_BATCH_INVALID', `pool ${pool} names no SHE slot`);
  if (she.keyId !== slot) throw pksError('PKS_BATCH_INVALID', `batch ${batchId} writes SHE key ${she.keyId}, pool ${pool} is slot ${slot}`);
  if (first && (first.keyId !== she.keyId || first.authKeyId !== she.authKeyId || first.counter !== she.counter || first.flags !== she.flags))
    throw pksError('PKS_BATCH_INVALID', `a chunk of batch ${batchId} carries other SHE parameters than the batch`);
}
