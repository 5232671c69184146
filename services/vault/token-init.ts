// First-time HSM token initialisation for setup, through PKCS#11 itself (C_InitToken, C_InitPIN).
// Why not softhsm2-util: it takes the PINs on its command line, and a command line is world-
// readable in /proc while it runs and lands in the journal's _CMDLINE field of every message the
// process (or runuser's PAM session around it) logs. The VM test found the HSM PIN there.
// Here the PINs come from files in tmpfs and never leave this process's memory.
import { readFile } from 'node:fs/promises';
import pkcs11js from 'pkcs11js';
import { pksError } from '../../appliance/errors.js';
import { acquireModule, releaseModule } from './p11-module.js';
import { mapP11Error } from './p11-errors.js';

export interface TokenInit {
  readonly module: string;
  readonly label: string;
  readonly soPin: Buffer;
  readonly pin: Buffer;
  /** SOFTHSM2_CONF for SoftHSM; unset for a hardware module */
  readonly softhsm2Conf?: string;
}

/** PKCS#11 labels are 32 bytes, blank-padded; SoftHSM PINs are 4..255 bytes. */
export function checkTokenInit(o: TokenInit): void {
  if (!/^[\x21-\x7e]([\x20-\x7e]{0,30}[\x21-\x7e])?$/.test(o.label)) throw pksError('PKS_CONFIG_INVALID', 'token label: 1..32 printable ASCII characters, no blank at either end');
  for (const [name, pin] of [['SO PIN', o.soPin], ['user PIN', o.pin]] as const)
    if (pin.length < 4 || pin.length > 255 || pin.includes(0x0a) || pin.includes(0x00)) throw pksError('PKS_CONFIG_INVALID', `${name}: 4..255 bytes on one line`);
}

// C_InitToken reads exactly 32 bytes of label: the binding passes the string as it is
const padLabel = (label: string): string => label.padEnd(32, ' ');
const tokenLabel = (raw: string | Buffer): string => raw.toString().replace(/[\s\0]+$/, '');

/**
 * Initialises a free token slot with `label`, its SO PIN and user PIN. Idempotent: when a token
 * with `label` already exists it is left as it is (its keys and PINs stay) and 'kept' is returned.
 */
export async function initToken(o: TokenInit): Promise<'initialised' | 'kept'> {
  checkTokenInit(o);
  const p11 = acquireModule(o.module, o.softhsm2Conf);
  try {
    const slots = p11.C_GetSlotList(true);
    const infos = slots.map((s) => ({ slot: s, info: p11.C_GetTokenInfo(s) }));
    if (infos.some((t) => tokenLabel(t.info.label) === o.label && t.info.flags & pkcs11js.CKF_TOKEN_INITIALIZED)) return 'kept';
    const free = infos.find((t) => !(t.info.flags & pkcs11js.CKF_TOKEN_INITIALIZED));
    if (!free) throw pksError('PKS_HSM_MODULE', 'no uninitialised token slot on the HSM');
    try {
      p11.C_InitToken(free.slot, o.soPin.toString('latin1'), padLabel(o.label));
    } catch (e) {
      throw mapP11Error(e, 'C_InitToken', 'PKS_HSM_MODULE');
    }
    // SoftHSM moves the new token to a new slot id: find it again by label
    const now = p11.C_GetSlotList(true).find((s) => tokenLabel(p11.C_GetTokenInfo(s).label) === o.label);
    if (now === undefined) throw pksError('PKS_HSM_MODULE', `token '${o.label}' not visible after initialisation`);
    const session = p11.C_OpenSession(now, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      p11.C_Login(session, pkcs11js.CKU_SO, o.soPin.toString('latin1'));
      p11.C_InitPIN(session, o.pin.toString('latin1'));
      p11.C_Logout(session);
    } catch (e) {
      throw mapP11Error(e, 'C_InitPIN', 'PKS_HSM_MODULE');
    } finally {
      p11.C_CloseSession(session);
    }
    return 'initialised';
  } finally {
    releaseModule(o.module);
  }
}

/** A PIN file: one line, the trailing newline not part of the PIN. */
export async function readPinFile(file: string): Promise<Buffer> {
  const raw = await readFile(file).catch((e) => {
    throw pksError('PKS_CONFIG_INVALID', `cannot read PIN file ${file}`, e);
  });
  return raw.subarray(0, raw.length - (raw.at(-1) === 0x0a ? 1 : 0));
}
