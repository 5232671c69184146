// How SHE memory-update messages ride on UDS, per ECU type. No public standard says how M1-M3
// go in and M4/M5 come out over UDS; OEMs use RoutineControl or WriteDataByIdentifier. So this
// is data: a JSON document (validated once, frozen) that the injector and the ECU simulator read
// alike. The ECU type is the middle part of the pool id (`<oem>.<ecu type>.<slot>`).
//
//   via "routine": 31 01 <rid> M1|M2|M3          → 71 01 <rid> M4|M5
//   via "did":     2E <writeDid> M1|M2|M3        → 6E <writeDid>
//                  22 <readDid>                  → 62 <readDid> M4|M5
// before it: 10 <session>, 27 <level>/<level+1> (seed/key), and 29 05/06 when `authentication`;
// the UID comes from 22 <uidDid>; after it 11 <reset> when given.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { compileChecker, deepFreeze } from '../config.js';
import { aesCmac } from '../she.js';
import { pksError } from '../errors.js';

export interface EcuTypeMapping {
  /** DiagnosticSessionControl sub-function before programming (0x02 programming, 0x03 extended) */
  session: number;
  /** SecurityAccess requestSeed level (odd); absent: no security access */
  securityLevel?: number;
  /** seed → key algorithm of that level */
  securityAlgorithm?: 'aes128-cmac';
  /** Authentication 0x29 with an unlock token before programming */
  authentication?: 'unlock-token';
  /** ReadDataByIdentifier DID answering the 15-byte SHE UID */
  uidDid: number;
  load: { via: 'routine'; routineId: number } | { via: 'did'; writeDid: number; readDid: number };
  /** ECUReset type after a successful load; absent: none */
  reset?: number;
}

export interface SheMapping {
  v: 1;
  types: Record<string, EcuTypeMapping>;
}

/** The mapping the plant-in-a-box and the tests use; a station overrides it with `--mapping FILE`. */
export const DEFAULT_MAPPING: SheMapping = deepFreeze<SheMapping>({
  v: 1,
  types: {
    bcm: { session: 0x02, securityLevel: 0x11, securityAlgorithm: 'aes128-cmac', uidDid: 0xf1a0, load: { via: 'routine', routineId: 0x0301 }, reset: 0x01 },
    gateway: { session: 0x03, securityLevel: 0x01, securityAlgorithm: 'aes128-cmac', uidDid: 0xf1a0, load: { via: 'did', writeDid: 0xf1a1, readDid: 0xf1a2 } },
  },
}) as SheMapping;

const U16 = { type: 'integer', minimum: 0, maximum: 0xffff } as const;
const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['v', 'types'],
  properties: {
    v: { const: 1 },
    types: {
      type: 'object',
      minProperties: 1,
      propertyNames: { pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$' },
      additionalProperties: {
        type: 'object',
        additionalProperties: false,
        required: ['session', 'uidDid', 'load'],
        properties: {
          session: { type: 'integer', minimum: 1, maximum: 0x7f },
          securityLevel: { type: 'integer', minimum: 1, maximum: 0x7d, not: { multipleOf: 2 } },
          securityAlgorithm: { enum: ['aes128-cmac'] },
          authentication: { enum: ['unlock-token'] },
          uidDid: U16,
          load: {
            oneOf: [
              { type: 'object', additionalProperties: false, required: ['via', 'routineId'], properties: { via: { const: 'routine' }, routineId: U16 } },
              { type: 'object', additionalProperties: false, required: ['via', 'writeDid', 'readDid'], properties: { via: { const: 'did' }, writeDid: U16, readDid: U16 } },
            ],
          },
          reset: { type: 'integer', minimum: 1, maximum: 0x7f },
        },
        dependencies: { securityLevel: ['securityAlgorithm'] },
      },
    },
  },
} as const;

let check: ((d: unknown) => SheMapping) | undefined;

export function parseMapping(doc: unknown): SheMapping {
  check ??= compileChecker<SheMapping>(schema, 'UDS mapping', 'PKS_UDS_MAPPING_INVALID');
  return deepFreeze(check(structuredClone(doc))) as SheMapping;
}

export function loadMapping(file: string): SheMapping {
  let doc: unknown;
  try {
    doc = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw pksError('PKS_UDS_MAPPING_INVALID', `${file}: ${(e as Error).message}`);
  }
  return parseMapping(doc);
}

/** The mapping of the ECU type a pool is for. */
export function mappingFor(m: SheMapping, pool: string): EcuTypeMapping & { type: string } {
  const type = pool.split('.')[1] ?? '';
  const t = m.types[type];
  if (!t) throw pksError('PKS_UDS_MAPPING_INVALID', `no UDS mapping for ECU type '${type}' (pool ${pool})`);
  return { ...t, type };
}

/**
 * Seed → key for SecurityAccess: AES-128-CMAC over the seed under the level's secret (the
 * secret is per ECU type and level, held by the station and the ECU, never in the mapping).
 */
export function securityKey(algorithm: 'aes128-cmac', secret: Buffer, seed: Buffer): Buffer {
  if (algorithm !== 'aes128-cmac') throw pksError('PKS_UDS_MAPPING_INVALID', `unknown security algorithm ${String(algorithm)}`);
  return aesCmac(secret, seed);
}

/** A dev secret for the plant-in-a-box: derived from the ECU type and level, so sim and injector agree. */
export function devSecuritySecret(type: string, level: number): Buffer {
  return createHash('sha256').update(`pks-dev-security-access|${type}|${level}`).digest().subarray(0, 16);
}
