// A SHE ECU simulator for tests and the plant-in-a-box: it processes CMD_LOAD_KEY the way a
// SHE module does (M1..M3 in, M4/M5 out), as strictly as the SHE specification, so a package a
// real SHE would refuse is refused here too, with the error code the SHE would answer:
//   - who authorises each slot: MASTER_ECU_KEY authorises itself and every other key;
//     BOOT_MAC_KEY authorises itself and BOOT_MAC; KEY_n is authorised by itself or by
//     MASTER_ECU_KEY; RAM_KEY by MASTER_ECU_KEY or any KEY_n; SECRET_KEY (0) and 15 never
//     (ERC_KEY_INVALID);
//   - empty slots: a slot never written is empty (value all-ones, the erased NVM). An empty key
//     authorises nothing but its own first load: the first write of an empty slot must use
//     the slot itself as AuthID with the empty value as the authorising key (ERC_KEY_EMPTY
//     otherwise), and its counter is not compared (there is none yet);
//   - WRITE_PROTECTION cannot be undone: a protected slot refuses every update, and a debug
//     erase (CMD_DEBUG) is refused while any slot is protected (ERC_KEY_WRITE_PROTECTED);
//   - WILDCARD: a slot whose stored flags carry WILDCARD refuses updates addressed to UID 0;
//   - counter: each update's counter must be strictly greater than the slot's (28 bits);
//   - all five flags (WRITE_PROTECTION, BOOT_PROTECTION, DEBUGGER_PROTECTION, KEY_USAGE,
//     WILDCARD) are stored with the key and reported by slot(); RAM_KEY (volatile) keeps no
//     counter and may be loaded while empty.
// An ECU as it reaches an EOL line has its MASTER_ECU_KEY and its user keys KEY_1..KEY_10
// written by the supplier (counter 0); `new SheEcu(uid, master)` is that ECU. `blank: true`
// is a factory-fresh part with every slot empty; `slots` sets or empties single slots.
import { createDecipheriv, randomBytes } from 'node:crypto';
import { KEY_UPDATE_ENC_C, KEY_UPDATE_MAC_C, SHE_FLAG, aesCmac, sheKdf, sheMessages } from '../../appliance/she.js';

export const SECRET_KEY = 0;
export const MASTER_ECU_KEY = 1;
export const BOOT_MAC_KEY = 2;
export const BOOT_MAC = 3;
export const KEY_1 = 4;
export const KEY_10 = 13;
export const RAM_KEY = 14;
/** The value of a slot that was never written (erased NVM). */
export const EMPTY_KEY: Buffer = Buffer.alloc(16, 0xff);

interface Slot {
  key: Buffer;
  counter: number;
  flags: number;
}

export interface SlotInit {
  key: Buffer;
  counter?: number;
  flags?: number;
}

export interface SheEcuOptions {
  /** every slot empty, MASTER_ECU_KEY included (the masterKey argument is then ignored) */
  blank?: boolean;
  /** per slot: its contents, or null for an empty slot (applied after the defaults) */
  slots?: Record<number, SlotInit | null>;
}

export type SheErc = 'ERC_KEY_UPDATE_ERROR' | 'ERC_KEY_WRITE_PROTECTED' | 'ERC_KEY_NOT_AVAILABLE' | 'ERC_KEY_INVALID' | 'ERC_KEY_EMPTY';

export class SheError extends Error {
  constructor(readonly erc: SheErc, why: string) {
    super(`${erc}: ${why}`);
  }
}

/** Which AuthIDs may authorise an update of each slot (SHE memory update protocol). */
export function authorisers(id: number): readonly number[] {
  if (id === MASTER_ECU_KEY) return [MASTER_ECU_KEY];
  if (id === BOOT_MAC_KEY || id === BOOT_MAC) return [MASTER_ECU_KEY, BOOT_MAC_KEY];
  if (id >= KEY_1 && id <= KEY_10) return [MASTER_ECU_KEY, id];
  if (id === RAM_KEY) return [MASTER_ECU_KEY, ...Array.from({ length: KEY_10 - KEY_1 + 1 }, (_, i) => KEY_1 + i)];
  return [];
}

export class SheEcu {
  private slots = new Map<number, Slot>();

  constructor(readonly uid: Buffer, masterKey: Buffer, opts: SheEcuOptions = {}) {
    if (uid.length !== 15) throw new Error('UID must be 15 bytes');
    if (!opts.blank) {
      this.slots.set(MASTER_ECU_KEY, { key: Buffer.from(masterKey), counter: 0, flags: 0 });
      for (let id = KEY_1; id <= KEY_10; id++) this.slots.set(id, { key: randomBytes(16), counter: 0, flags: 0 });
    }
    for (const [k, v] of Object.entries(opts.slots ?? {})) {
      const id = Number(k);
      if (v === null) this.slots.delete(id);
      else this.slots.set(id, { key: Buffer.from(v.key), counter: v.counter ?? 0, flags: v.flags ?? 0 });
    }
  }

  slot(id: number): Readonly<Slot> | undefined {
    return this.slots.get(id);
  }

  /** CMD_DEBUG's effect on the key store: every key erased, refused while any is write-protected. */
  debugErase(): void {
    for (const [id, s] of this.slots) if (s.flags & SHE_FLAG.WRITE_PROT) throw new SheError('ERC_KEY_WRITE_PROTECTED', `slot ${id} is write-protected`);
    this.slots.clear();
  }

  /** CMD_LOAD_KEY: returns M4/M5 or throws SheError like the SHE would answer. */
  loadKey(m1: Buffer, m2: Buffer, m3: Buffer): { m4: Buffer; m5: Buffer } {
    if (m1.length !== 16 || m2.length !== 32 || m3.length !== 16) throw new SheError('ERC_KEY_UPDATE_ERROR', 'bad message length');
    const uid = m1.subarray(0, 15);
    const id = m1[15]! >> 4;
    const authId = m1[15]! & 0x0f;
    const target = this.slots.get(id);
    if (target && target.flags & SHE_FLAG.WRITE_PROT) throw new SheError('ERC_KEY_WRITE_PROTECTED', `slot ${id} is write-protected`);
    if (!authorisers(id).includes(authId)) throw new SheError('ERC_KEY_INVALID', `auth key not allowed for this slot: ${authId} for ${id}`);
    // an empty slot is written first by itself (with the empty value), never by another key
    if (!target && authId !== id && id !== RAM_KEY) throw new SheError('ERC_KEY_EMPTY', `slot ${id} is empty: its first load must be authorised by itself`);
    const auth = authId === id && !target ? { key: EMPTY_KEY, counter: 0, flags: 0 } : this.slots.get(authId);
    if (!auth) throw new SheError('ERC_KEY_EMPTY', `auth key ${authId} is empty`);
    const k2 = sheKdf(auth.key, KEY_UPDATE_MAC_C);
    const mac = aesCmac(k2, Buffer.concat([m1, m2]));
    if (!mac.equals(m3)) throw new SheError('ERC_KEY_UPDATE_ERROR', 'M3 does not verify');
    const wildcard = uid.every((b) => b === 0);
    if (!wildcard && !uid.equals(this.uid)) throw new SheError('ERC_KEY_UPDATE_ERROR', 'UID does not match');
    if (wildcard && target && target.flags & SHE_FLAG.WILDCARD) throw new SheError('ERC_KEY_UPDATE_ERROR', 'key forbids wildcard update');
    const k1 = sheKdf(auth.key, KEY_UPDATE_ENC_C);
    const d = createDecipheriv('aes-128-cbc', k1, Buffer.alloc(16));
    d.setAutoPadding(false);
    const plain = Buffer.concat([d.update(m2), d.final()]);
    const counter = plain.readUInt32BE(0) >>> 4;
    const flags = ((plain[3]! & 0x0f) << 1) | (plain[4]! >> 7);
    const newKey = plain.subarray(16, 32);
    if (target && counter <= target.counter) throw new SheError('ERC_KEY_UPDATE_ERROR', `counter ${counter} not above ${target.counter}`);
    const authKey = Buffer.from(auth.key);
    // RAM_KEY is volatile: it keeps no counter, so it can always be loaded again
    this.slots.set(id, { key: Buffer.from(newKey), counter: id === RAM_KEY ? 0 : counter, flags });
    const m = sheMessages({ uid: this.uid, keyId: id, authKeyId: authId, authKey, newKey, counter, flags });
    return { m4: m.m4, m5: m.m5 };
  }
}
