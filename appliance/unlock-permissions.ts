// The unlock permission bits and the default roles (README "ECU unlock tokens"). The mask is
// 128 bits, ADAC's size; bits 0..31 are the word an AUTOSAR 0x29 role field carries. Bits are
// stable API: ECUs in the field test them, so a bit is never renumbered or reused.
import { pksError } from './errors.js';

export const PERMISSION_BITS = Object.freeze({
  EXTENDED_LOGGING: 0,
  DEBUG_READ: 1,
  DEBUG_INTERFACE: 2,
  FIELD_RETURN_ANALYSIS: 3,
  CALIBRATION_WRITE: 4,
  REPROGRAMMING: 5,
  SECURE_BOOT_BYPASS: 6,
  IDS_DISABLE: 7,
} as const);
export type PermissionName = keyof typeof PERMISSION_BITS;
export const PERMISSION_NAMES = Object.keys(PERMISSION_BITS) as PermissionName[];

/** Bits 8..31: the OEM's own (still inside the AUTOSAR word); 32..127: reserved. */
export const OEM_BITS = { from: 8, to: 31 } as const;

export function maskOf(names: readonly string[]): bigint {
  let m = 0n;
  for (const n of names) {
    if (!Object.prototype.hasOwnProperty.call(PERMISSION_BITS, n)) throw pksError('PKS_BAD_REQUEST', `unknown permission '${String(n).slice(0, 32)}'`);
    m |= 1n << BigInt(PERMISSION_BITS[n as PermissionName]);
  }
  return m;
}

export function namesOf(mask: bigint): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 128; bit++) {
    if (!(mask & (1n << BigInt(bit)))) continue;
    const name = PERMISSION_NAMES.find((n) => PERMISSION_BITS[n] === bit);
    out.push(name ?? `BIT_${bit}`);
  }
  return out;
}

/** The AUTOSAR 0x29 role word: bits 0..31 of the mask, as a 32-bit unsigned integer. */
export const autosarRole = (mask: bigint): number => Number(mask & 0xffff_ffffn);

export interface RoleSpec {
  /** permissions per ECU type; '*' for every type the role is not listed for separately */
  permissions: Record<string, string[]>;
  /** longest token a holder of this role gets */
  maxTokenSeconds: number;
  /** longest access an onboarding may grant */
  maxAccessDays: number;
  /** two different admins must approve (four eyes) */
  highPrivilege: boolean;
  /** may onboard, approve, revoke and read all logs; gets no token permissions by itself */
  admin?: boolean;
}

export const DEFAULT_ROLES: Readonly<Record<string, RoleSpec>> = Object.freeze({
  TESTING: { permissions: { '*': ['EXTENDED_LOGGING'] }, maxTokenSeconds: 24 * 3600, maxAccessDays: 180, highPrivilege: false },
  AFTER_SALES: { permissions: { '*': ['FIELD_RETURN_ANALYSIS', 'EXTENDED_LOGGING', 'DEBUG_READ'] }, maxTokenSeconds: 8 * 3600, maxAccessDays: 365, highPrivilege: false },
  DEVELOPMENT: {
    permissions: { '*': ['EXTENDED_LOGGING', 'DEBUG_READ', 'DEBUG_INTERFACE', 'CALIBRATION_WRITE'], gateway: ['EXTENDED_LOGGING', 'DEBUG_READ'] },
    maxTokenSeconds: 4 * 3600,
    maxAccessDays: 90,
    highPrivilege: true,
  },
  ADMIN: { permissions: {}, maxTokenSeconds: 0, maxAccessDays: 365, highPrivilege: true, admin: true },
});

/** The mask a role grants for an ECU type (0n: none). */
export function roleMask(role: RoleSpec | undefined, ecuType: string): bigint {
  if (!role) return 0n;
  const names = role.permissions[ecuType] ?? role.permissions['*'] ?? [];
  return maskOf(names);
}
