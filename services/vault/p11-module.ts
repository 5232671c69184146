// One loaded, initialised PKCS#11 module per library path per process. Cryptoki state (the
// C_Initialize, the login) is per process and per library, not per pkcs11js object, so two Hsm
// instances on the same module must share it: the first opener initialises, the last closer
// finalises.
import pkcs11js from 'pkcs11js';
import { pksError } from '../../appliance/errors.js';
import { ckrName, mapP11Error } from './p11-errors.js';

export type P11 = InstanceType<typeof pkcs11js.PKCS11>;

interface Loaded {
  readonly p11: P11;
  refs: number;
  initialised: boolean;
  /** SOFTHSM2_CONF in force when C_Initialize ran (SoftHSM reads it only then) */
  conf: string | undefined;
}

const loaded = new Map<string, Loaded>();

function initialise(entry: Loaded, softhsm2Conf: string | undefined): void {
  if (softhsm2Conf !== undefined) process.env.SOFTHSM2_CONF = softhsm2Conf;
  try {
    entry.p11.C_Initialize();
  } catch (e) {
    // another pkcs11js object in this process (a test, a tool) initialised the same library
    if (ckrName(e) !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw mapP11Error(e, 'C_Initialize', 'PKS_HSM_MODULE');
  }
  entry.initialised = true;
  entry.conf = softhsm2Conf;
}

export function acquireModule(path: string, softhsm2Conf: string | undefined): P11 {
  let entry = loaded.get(path);
  if (!entry) {
    const p11 = new pkcs11js.PKCS11();
    try {
      p11.load(path);
    } catch (e) {
      // the loader's message names the path and the dlopen reason, nothing secret
      const reason = e instanceof Error ? e.message.split('\n')[0] : 'unknown';
      throw pksError('PKS_HSM_MODULE', `cannot load PKCS#11 module: ${reason}`, e);
    }
    entry = { p11, refs: 0, initialised: false, conf: undefined };
    loaded.set(path, entry);
  }
  if (!entry.initialised) {
    initialise(entry, softhsm2Conf);
  } else if (softhsm2Conf !== undefined && entry.conf !== softhsm2Conf) {
    throw pksError('PKS_HSM_MODULE', 'PKCS#11 module is already initialised with another SOFTHSM2_CONF');
  }
  entry.refs++;
  return entry.p11;
}

/**
 * Finalises and initialises the module again, for an HSM that restarted under us. Only done
 * when this caller is the module's sole user: finalising pulls the sessions of every user.
 */
export function reinitialiseModule(path: string): boolean {
  const entry = loaded.get(path);
  if (!entry || entry.refs !== 1) return false;
  try {
    entry.p11.C_Finalize();
  } catch {
    // already gone is what we expected
  }
  entry.initialised = false;
  initialise(entry, entry.conf);
  return true;
}

export function releaseModule(path: string): void {
  const entry = loaded.get(path);
  if (!entry || entry.refs === 0) return;
  entry.refs--;
  if (entry.refs > 0) return;
  try {
    entry.p11.C_Finalize();
  } catch {
    // closing down: nothing useful to do with a failure here
  }
  // The library stays loaded (dlclose of a crypto library is a known source of exit-time
  // crashes); the next acquire initialises it again and re-reads SOFTHSM2_CONF.
  entry.initialised = false;
  entry.conf = undefined;
}

export const moduleUsers = (path: string): number => loaded.get(path)?.refs ?? 0;
