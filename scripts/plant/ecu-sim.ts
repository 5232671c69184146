// A SHE ECU simulator for tests and the plant-in-a-box: it processes CMD_LOAD_KEY the way a
// SHE module does (M1..M3 in, M4/M5 out), checking the UID, the auth-key rules, the MAC,
// counter monotonicity and write protection, so a wrong package is refused as a real ECU
// would refuse it.
import { createDecipheriv } from 'node:crypto';
import { KEY_UPDATE_ENC_C, KEY_UPDATE_MAC_C, SHE_FLAG, aesCmac, sheKdf, sheMessages } from '../../appliance/she.js';

export const MASTER_ECU_KEY = 1;

interface Slot {
  key: Buffer;
  counter: number;
  flags: number;
}

export type SheErc = 'ERC_KEY_UPDATE_ERROR' | 'ERC_KEY_WRITE_PROTECTED' | 'ERC_KEY_NOT_AVAILABLE' | 'ERC_KEY_INVALID';

export class SheError extends Error {
  constructor(readonly erc: SheErc, why: string) {
    super(`${erc}: ${why}`);
  }
}

export class SheEcu {
  private slots = new Map<number, Slot>();

  constructor(readonly uid: Buffer, masterKey: Buffer) {
    if (uid.length !== 15) throw new Error('UID must be 15 bytes');
    this.slots.set(MASTER_ECU_KEY, { key: Buffer.from(masterKey), counter: 0, flags: 0 });
  }

  slot(id: number): Readonly<Slot> | undefined {
    return this.slots.get(id);
  }

  /** CMD_LOAD_KEY: returns M4/M5 or throws SheError like the SHE would answer. */
  loadKey(m1: Buffer, m2: Buffer, m3: Buffer): { m4: Buffer; m5: Buffer } {
    if (m1.length !== 16 || m2.length !== 32 || m3.length !== 16) throw new SheError('ERC_KEY_UPDATE_ERROR', 'bad message length');
    const uid = m1.subarray(0, 15);
    const id = m1[15]! >> 4;
    const authId = m1[15]! & 0x0f;
    const target = this.slots.get(id);
    const wildcard = uid.every((b) => b === 0);
    if (!wildcard && !uid.equals(this.uid)) throw new SheError('ERC_KEY_UPDATE_ERROR', 'UID does not match');
    if (wildcard && target && target.flags & SHE_FLAG.WILDCARD) throw new SheError('ERC_KEY_UPDATE_ERROR', 'key forbids wildcard update');
    // a key may be updated by itself or by the MASTER_ECU_KEY
    if (authId !== id && authId !== MASTER_ECU_KEY) throw new SheError('ERC_KEY_UPDATE_ERROR', 'auth key not allowed for this slot');
    const auth = this.slots.get(authId);
    if (!auth) throw new SheError('ERC_KEY_NOT_AVAILABLE', 'auth key empty');
    const k2 = sheKdf(auth.key, KEY_UPDATE_MAC_C);
    const mac = aesCmac(k2, Buffer.concat([m1, m2]));
    if (!mac.equals(m3)) throw new SheError('ERC_KEY_UPDATE_ERROR', 'M3 does not verify');
    const k1 = sheKdf(auth.key, KEY_UPDATE_ENC_C);
    const d = createDecipheriv('aes-128-cbc', k1, Buffer.alloc(16));
    d.setAutoPadding(false);
    const plain = Buffer.concat([d.update(m2), d.final()]);
    const counter = (plain[0]! << 20) | (plain[1]! << 12) | (plain[2]! << 4) | (plain[3]! >> 4);
    const flags = ((plain[3]! & 0x0f) << 1) | (plain[4]! >> 7);
    const newKey = plain.subarray(16, 32);
    if (target && target.flags & SHE_FLAG.WRITE_PROT) throw new SheError('ERC_KEY_WRITE_PROTECTED', `slot ${id} is write-protected`);
    if (target && counter <= target.counter) throw new SheError('ERC_KEY_UPDATE_ERROR', `counter ${counter} not above ${target.counter}`);
    this.slots.set(id, { key: Buffer.from(newKey), counter, flags });
    const m = sheMessages({ uid: this.uid, keyId: id, authKeyId: authId, authKey: auth.key, newKey, counter, flags });
    return { m4: m.m4, m5: m.m5 };
  }
}
