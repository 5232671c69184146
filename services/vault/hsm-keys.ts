// The vault's key hierarchy as one table. The same table produces the generation templates and
// the attributes checkHierarchy() insists on, so what we create and what we trust cannot drift
// apart. Every usage attribute is set explicitly: a module's defaults are not our policy.
import pkcs11js from 'pkcs11js';
import type { Template } from 'pkcs11js';
import { P256_EC_PARAMS } from '../../appliance/ec-der.js';

const BUILTIN_KEYS = ['identity', 'transport', 'storage', 'audit', 'ecu-ca'] as const;
/** `unlock-*`: keys of the unlock service, added by registerKey() from the vault config (unlock-keys.ts) */
export type KeyName = (typeof BUILTIN_KEYS)[number] | `unlock-${string}`;
export type SigningKeyName = 'identity' | 'audit' | 'ecu-ca' | `unlock-${string}`;
export type PublicKeyName = Exclude<KeyName, 'storage'>;

// mutable only through registerKey(), before the HSM is opened
export const KEY_NAMES: KeyName[] = [...BUILTIN_KEYS];
export const SIGNING_KEYS: SigningKeyName[] = ['identity', 'audit', 'ecu-ca'];
export const PUBLIC_KEYS: PublicKeyName[] = ['identity', 'transport', 'audit', 'ecu-ca'];

export interface KeySpec {
  readonly name: KeyName;
  /** ec: P-256 key pair; aes: AES-256 secret key */
  readonly kind: 'ec' | 'aes';
  readonly sign: boolean;
  readonly derive: boolean;
}

export const KEY_SPECS: Record<KeyName, KeySpec> = {
  identity: { name: 'identity', kind: 'ec', sign: true, derive: false },
  transport: { name: 'transport', kind: 'ec', sign: false, derive: true },
  storage: { name: 'storage', kind: 'aes', sign: false, derive: false },
  audit: { name: 'audit', kind: 'ec', sign: true, derive: false },
  'ecu-ca': { name: 'ecu-ca', kind: 'ec', sign: true, derive: false },
};

/** Adds a P-256 signing key to the hierarchy (created by ensureHierarchy, checked by checkHierarchy). */
export function registerKey(spec: KeySpec & { name: `unlock-${string}` }): void {
  if (KEY_SPECS[spec.name]) return;
  KEY_SPECS[spec.name] = Object.freeze({ ...spec });
  KEY_NAMES.push(spec.name);
  if (spec.sign) SIGNING_KEYS.push(spec.name);
  PUBLIC_KEYS.push(spec.name);
}

/** private: EC private key or AES secret key (the sensitive half); public: EC public key */
export type KeyPart = 'private' | 'public';

export const keyLabel = (name: KeyName): string => `pks-${name}`;
export const keyId = (name: KeyName): Buffer => Buffer.from(keyLabel(name), 'ascii');

export function objectClass(spec: KeySpec, part: KeyPart): number {
  if (part === 'public') return pkcs11js.CKO_PUBLIC_KEY;
  return spec.kind === 'aes' ? pkcs11js.CKO_SECRET_KEY : pkcs11js.CKO_PRIVATE_KEY;
}

/** Boolean attributes an object must carry, as [CKA_*, value, name for messages]. */
type Expectation = readonly [number, boolean, string];

function usage(spec: KeySpec, part: KeyPart): Expectation[] {
  const A = pkcs11js;
  if (spec.kind === 'aes') {
    return [
      [A.CKA_ENCRYPT, true, 'CKA_ENCRYPT'],
      [A.CKA_DECRYPT, true, 'CKA_DECRYPT'],
      [A.CKA_SIGN, false, 'CKA_SIGN'],
      [A.CKA_VERIFY, false, 'CKA_VERIFY'],
      [A.CKA_WRAP, false, 'CKA_WRAP'],
      [A.CKA_UNWRAP, false, 'CKA_UNWRAP'],
      [A.CKA_DERIVE, false, 'CKA_DERIVE'],
    ];
  }
  // PKCS#11 only defines the private-side usages on private keys and the public-side ones on
  // public keys (SoftHSM answers CKR_ATTRIBUTE_TYPE_INVALID otherwise).
  if (part === 'private') {
    return [
      [A.CKA_SIGN, spec.sign, 'CKA_SIGN'],
      [A.CKA_SIGN_RECOVER, false, 'CKA_SIGN_RECOVER'],
      [A.CKA_DECRYPT, false, 'CKA_DECRYPT'],
      [A.CKA_UNWRAP, false, 'CKA_UNWRAP'],
      [A.CKA_DERIVE, spec.derive, 'CKA_DERIVE'],
    ];
  }
  return [
    [A.CKA_VERIFY, spec.sign, 'CKA_VERIFY'],
    [A.CKA_VERIFY_RECOVER, false, 'CKA_VERIFY_RECOVER'],
    [A.CKA_ENCRYPT, false, 'CKA_ENCRYPT'],
    [A.CKA_WRAP, false, 'CKA_WRAP'],
    [A.CKA_DERIVE, false, 'CKA_DERIVE'],
  ];
}

/** What checkHierarchy() requires of an existing object. */
export function expectations(spec: KeySpec, part: KeyPart): Expectation[] {
  const A = pkcs11js;
  const base: Expectation[] = [
    [A.CKA_TOKEN, true, 'CKA_TOKEN'],
    [A.CKA_COPYABLE, false, 'CKA_COPYABLE'],
  ];
  if (part === 'private') {
    base.push(
      [A.CKA_PRIVATE, true, 'CKA_PRIVATE'],
      [A.CKA_SENSITIVE, true, 'CKA_SENSITIVE'],
      [A.CKA_EXTRACTABLE, false, 'CKA_EXTRACTABLE'],
      // these two prove the key was never in clear, not just that it is protected now
      [A.CKA_ALWAYS_SENSITIVE, true, 'CKA_ALWAYS_SENSITIVE'],
      [A.CKA_NEVER_EXTRACTABLE, true, 'CKA_NEVER_EXTRACTABLE'],
      [A.CKA_MODIFIABLE, false, 'CKA_MODIFIABLE'],
    );
  }
  return [...base, ...usage(spec, part)];
}

const attrs = (list: Expectation[]): Template => list.map(([type, value]) => ({ type, value }));

function common(spec: KeySpec, part: KeyPart): Template {
  const A = pkcs11js;
  return [
    { type: A.CKA_CLASS, value: objectClass(spec, part) },
    { type: A.CKA_TOKEN, value: true },
    { type: A.CKA_LABEL, value: keyLabel(spec.name) },
    { type: A.CKA_ID, value: keyId(spec.name) },
    { type: A.CKA_MODIFIABLE, value: false },
    // no C_CopyObject: a copy could be made with weaker attributes (issue 9)
    { type: A.CKA_COPYABLE, value: false },
  ];
}

export function ecPairTemplates(spec: KeySpec): { pub: Template; priv: Template } {
  const A = pkcs11js;
  return {
    pub: [
      ...common(spec, 'public'),
      { type: A.CKA_KEY_TYPE, value: A.CKK_EC },
      // the public half is public: readable without login so status/publicKey need no secrets
      { type: A.CKA_PRIVATE, value: false },
      { type: A.CKA_EC_PARAMS, value: P256_EC_PARAMS },
      ...attrs(usage(spec, 'public')),
    ],
    priv: [
      ...common(spec, 'private'),
      { type: A.CKA_KEY_TYPE, value: A.CKK_EC },
      { type: A.CKA_PRIVATE, value: true },
      { type: A.CKA_SENSITIVE, value: true },
      { type: A.CKA_EXTRACTABLE, value: false },
      ...attrs(usage(spec, 'private')),
    ],
  };
}

export function aesTemplate(spec: KeySpec): Template {
  const A = pkcs11js;
  return [
    ...common(spec, 'private'),
    { type: A.CKA_KEY_TYPE, value: A.CKK_AES },
    { type: A.CKA_VALUE_LEN, value: 32 },
    { type: A.CKA_PRIVATE, value: true },
    { type: A.CKA_SENSITIVE, value: true },
    { type: A.CKA_EXTRACTABLE, value: false },
    ...attrs(usage(spec, 'private')),
  ];
}

export const isKeyName = (v: unknown): v is KeyName =>
  typeof v === 'string' && (KEY_NAMES as readonly string[]).includes(v);
