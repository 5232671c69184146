// Config is validated once at start against the service's JSON schema and then frozen: a
// service never runs on a half-valid config, and nothing can change it behind its back.
// A bad file names the offending key, so plant IT can fix it without reading code.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Ajv as AjvType, ErrorObject, Options, SchemaObject } from 'ajv';
import { pksError, type ErrorCode } from './errors.js';

// ajv and ajv-formats are CommonJS; require() gives their real exports under NodeNext
const require = createRequire(import.meta.url);
const Ajv = require('ajv').default as new (o: Options) => AjvType;
const addFormats = require('ajv-formats').default as (a: AjvType) => AjvType;

export type DeepReadonly<T> = T extends (infer R)[]
  ? ReadonlyArray<DeepReadonly<R>>
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

export function deepFreeze<T>(o: T): DeepReadonly<T> {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o as object)) deepFreeze(v);
  }
  return o as DeepReadonly<T>;
}

export function makeAjv(): AjvType {
  const ajv = new Ajv({ allErrors: false, strict: true, useDefaults: true, coerceTypes: false, removeAdditional: false });
  addFormats(ajv);
  return ajv;
}

function describe(err: ErrorObject): string {
  const where = err.instancePath ? err.instancePath.slice(1).replace(/\//g, '.') : '(top level)';
  if (err.keyword === 'additionalProperties') {
    const extra = (err.params as { additionalProperty: string }).additionalProperty;
    return `unknown key '${where === '(top level)' ? extra : `${where}.${extra}`}'`;
  }
  if (err.keyword === 'required') {
    const miss = (err.params as { missingProperty: string }).missingProperty;
    return `missing key '${where === '(top level)' ? miss : `${where}.${miss}`}'`;
  }
  return `key '${where}' ${err.message ?? 'is invalid'}`;
}

// One instance for every checker: ajv-formats' setup is paid once, not per schema.
let shared: AjvType | undefined;

/**
 * A checker for untrusted input (batches, commands, files): it validates in place (defaults
 * applied) and throws `code` naming the offending key. Compiled on first use, once: services
 * define dozens at module load, and compiling them all there cost the uplink 45 s of its start
 * under the VM's emulated CPU (a profile of the dev image), past its start timeout.
 */
export function compileChecker<T>(schema: SchemaObject, label: string, code: ErrorCode = 'PKS_BAD_REQUEST'): (data: unknown) => T {
  let validate: ReturnType<AjvType['compile']> | undefined;
  return (data: unknown): T => {
    validate ??= (shared ??= makeAjv()).compile(schema);
    if (!validate(data)) throw pksError(code, `${label}: ${describe(validate.errors![0]!)}`);
    return data as T;
  };
}

// A config schema is compiled once per schema object: a service loads its file once, but
// `pksctl config check`, the setup wizard and the fuzzer validate many files against the same
// schema, and compiling it was nearly all of each call's time. Its own ajv instance, so a
// config schema's `$id` never meets the input checkers'; two different schema objects with
// the same `$id` would clash in one instance, and such a one gets an instance of its own.
let configAjv: AjvType | undefined;
const configValidators = new WeakMap<SchemaObject, ReturnType<AjvType['compile']>>();
function configValidator(schema: SchemaObject): ReturnType<AjvType['compile']> {
  let v = configValidators.get(schema);
  if (!v) {
    try {
      v = (configAjv ??= makeAjv()).compile(schema);
    } catch {
      v = makeAjv().compile(schema);
    }
    configValidators.set(schema, v);
  }
  return v;
}

/** Validates `data` against `schema` (defaults applied), freezes it, or throws PKS_CONFIG_INVALID naming the key. */
export function validateConfig<T>(schema: SchemaObject, data: unknown, source = 'config'): DeepReadonly<T> {
  const validate = configValidator(schema);
  const copy = structuredClone(data);
  if (!validate(copy)) {
    throw pksError('PKS_CONFIG_INVALID', `${source}: ${describe(validate.errors![0]!)}`);
  }
  return deepFreeze(copy as T);
}

/** Reads the JSON config file named by `file` or $PKS_CONFIG, then validates and freezes it. */
export function loadConfig<T>(schema: SchemaObject, file = process.env.PKS_CONFIG): DeepReadonly<T> {
  if (!file) throw pksError('PKS_CONFIG_UNREADABLE', 'no config file given (set PKS_CONFIG)');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw pksError('PKS_CONFIG_UNREADABLE', `${file}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`);
  }
  if (text.length > 1 << 20) throw pksError('PKS_CONFIG_INVALID', `${file}: larger than 1 MiB`);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw pksError('PKS_CONFIG_INVALID', `${file}: not JSON (${(e as Error).message})`);
  }
  return validateConfig<T>(schema, data, path.basename(file));
}

/**
 * Reads a secret handed over as a systemd credential ($CREDENTIALS_DIRECTORY/name), or from
 * an explicit file for development. Trailing newlines are dropped; an empty secret is refused.
 */
export function readCredential(name: string, fallbackFile?: string): string {
  if (!/^[a-z0-9][a-z0-9._-]{0,63}$/.test(name)) throw pksError('PKS_CREDENTIAL_MISSING', `bad credential name`);
  const dir = process.env.CREDENTIALS_DIRECTORY;
  const file = dir ? path.join(dir, name) : fallbackFile;
  if (!file) throw pksError('PKS_CREDENTIAL_MISSING', `credential '${name}' not provided`);
  let v: string;
  try {
    v = readFileSync(file, 'utf8').replace(/[\r\n]+$/, '');
  } catch {
    throw pksError('PKS_CREDENTIAL_MISSING', `credential '${name}' cannot be read`);
  }
  if (!v) throw pksError('PKS_CREDENTIAL_MISSING', `credential '${name}' is empty`);
  return v;
}
