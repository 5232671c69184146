// The load generator's ECUs, precomputed: the proof an ECU answers to CMD_LOAD_KEY (M4, M5)
// depends on the new key (known to the bench, which built the batch), the SHE parameters and
// the ECU's UID. The key-derived part (K4 and M4's encrypted tail block) is computed for every
// record before the clock starts; per injection only M5's CMAC is left. The package itself is
// not checked here: the vault's she-verify of the proof does that (a wrong package burns).
import { createCipheriv } from 'node:crypto';
import { aesCmac, KEY_UPDATE_ENC_C, KEY_UPDATE_MAC_C, sheKdf } from '../../appliance/she.js';

export interface SheParams {
  keyId: number;
  authKeyId: number;
  counter: number;
}

export class EcuAnswers {
  private readonly pre = new Map<string, { k4: Buffer; tail: Buffer }>();

  constructor(private readonly p: SheParams) {}

  add(keys: readonly { id: string; key: Buffer }[]): this {
    const c = Buffer.alloc(16);
    c.writeUInt32BE(this.p.counter * 16 + 0x8, 0);
    for (const { id, key } of keys) {
      const ecb = createCipheriv('aes-128-ecb', sheKdf(key, KEY_UPDATE_ENC_C), null).setAutoPadding(false);
      this.pre.set(id, { k4: sheKdf(key, KEY_UPDATE_MAC_C), tail: Buffer.concat([ecb.update(c), ecb.final()]) });
    }
    return this;
  }

  get size(): number {
    return this.pre.size;
  }

  /** M4/M5 of the ECU `uid` (hex) that loaded record `recordId`. */
  proof(recordId: string, uid: string): { m4: string; m5: string } {
    const p = this.pre.get(recordId);
    if (!p) throw new Error(`no precomputed answer for ${recordId}`);
    const m4 = Buffer.alloc(32);
    m4.write(uid, 0, 15, 'hex');
    m4[15] = (this.p.keyId << 4) | this.p.authKeyId;
    p.tail.copy(m4, 16);
    return { m4: m4.toString('hex'), m5: aesCmac(p.k4, m4).toString('hex') };
  }
}
