// The unlock service's keys in the HSM: one user-CA key (it certifies the people who may ask
// for tokens) and one token key per OEM or ECU type (named in the vault config), all P-256,
// sensitive, never extractable, never copyable, sign only. Registered before the HSM is opened,
// so ensureHierarchy creates them and checkHierarchy insists on their attributes like on the rest.
import { registerKey } from './hsm-keys.js';

export const USER_CA_KEY = 'unlock-user-ca' as const;
export const tokenKeyName = (name: string): `unlock-token-${string}` => `unlock-token-${name}`;
/** Token key names in the config: short, so the HSM label `pks-unlock-token-<name>` stays readable. */
export const TOKEN_KEY_NAME = { type: 'string', pattern: '^[a-z0-9][a-z0-9_-]{0,15}$' } as const;

export function registerUnlockKeys(tokenKeys: readonly string[]): void {
  registerKey({ name: USER_CA_KEY, kind: 'ec', sign: true, derive: false });
  for (const k of tokenKeys) registerKey({ name: tokenKeyName(k), kind: 'ec', sign: true, derive: false });
}
