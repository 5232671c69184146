// Measured boot of the application: at boot, before the vault starts, pks-measure.service hashes
// the application tree and its configuration into PCR 15 (the first PCR that neither the
// firmware, the boot loader, systemd (11-13) nor IMA (10) use, so nothing else extends it), one
// extend per tree, and writes the measurement log to /run/pks/measurements.json. The build
// computes the same digests over the staged rootfs for expected-pcrs.json.
import { execFile } from 'node:child_process';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pksError } from '../../appliance/errors.js';
import { LIVE_MEASUREMENT_PATH, type LiveMeasurement } from '../../appliance/contracts/measurement.js';
import { treeManifest } from './manifest.js';
import { PCR_BANK, ZERO_PCR, parseDigestHex, replay, sha256 } from './pcr.js';

export const APP_PCR = 15;
export const DEFAULT_TCTI = 'device:/dev/tpmrm0';
export const MEASUREMENTS_PATH = '/run/pks/measurements.json';
export const EXPECTED_PATH = '/usr/lib/pks-image/expected-pcrs.json';
export const EVENT_LOG_PATH = '/sys/kernel/security/tpm0/binary_bios_measurements';

/**
 * What PCR 15 measures, in extend order. Credentials under /etc/pks are left out: their digest
 * would sit in a world-readable log and let anyone test guesses of a short PIN offline.
 */
export const MEASURED_TREES = Object.freeze([
  { name: 'pks-app', path: '/usr/lib/pks', exclude: [] as string[] },
  { name: 'pks-config', path: '/etc/pks', exclude: ['credentials'] },
] as const);

export interface TreeMeasurement {
  readonly name: string;
  readonly path: string;
  /** SHA-256 of "<name>\n<manifest>": the digest extended into PCR 15. */
  readonly digest: string;
  readonly files: number;
  readonly bytes: number;
}

export interface MeasurementLog {
  readonly version: 1;
  readonly pcr: number;
  readonly bank: typeof PCR_BANK;
  readonly measuredAt: string;
  readonly events: TreeMeasurement[];
  /** PCR 15 read back after the extends. */
  readonly pcrValue: string;
}

/** Measures every tree of MEASURED_TREES under `rootfs` ("/" on the appliance). */
export async function measureTrees(rootfs = '/'): Promise<TreeMeasurement[]> {
  const out: TreeMeasurement[] = [];
  for (const t of MEASURED_TREES) {
    const m = await treeManifest(path.join(rootfs, t.path), t.exclude);
    out.push({ name: t.name, path: t.path, digest: sha256(`${t.name}\n`, m.text).toString('hex'), files: m.files, bytes: m.bytes });
  }
  return out;
}

/** PCR 15 after the measurements, starting from its reset value (zero). */
export const pcr15Of = (events: readonly TreeMeasurement[]): Buffer => replay(events.map((e) => parseDigestHex(e.digest)), ZERO_PCR);

// ---- tpm2-tools ------------------------------------------------------------------------------

let toolTimeoutMs = 30_000;
/** How long one tpm2 tool may take before it is killed (a test shortens it). */
export function setTpmToolTimeout(ms: number): void {
  toolTimeoutMs = ms;
}

/** Runs one tpm2-tools command against `tcti`; failures are coded, stderr's last line kept. */
export function tpm2(tool: string, args: string[], tcti: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, ['-T', tcti, ...args], { timeout: toolTimeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) {
        // a tool killed at the timeout is told apart from a TPM that answered with an error: the
        // first is a slow moment (an emulated guest busy booting), the second a verdict
        const code =
          (err as NodeJS.ErrnoException).code === 'ENOENT'
            ? `${tool} not installed`
            : err.killed
              ? `${tool} did not finish within ${toolTimeoutMs / 1000} s (timed out)`
              : `${tool} failed: ${String(stderr).trim().split('\n').pop() ?? ''}`;
        reject(pksError('PKS_SERVICE_UNAVAILABLE', `TPM: ${code}`.slice(0, 300), err));
      } else resolve(String(stdout));
    });
  });
}

/** Reads SHA-256 PCRs through tpm2_pcrread. */
export async function readPcrs(pcrs: readonly number[], tcti = DEFAULT_TCTI): Promise<Map<number, Buffer>> {
  for (const p of pcrs) if (!Number.isInteger(p) || p < 0 || p > 23) throw pksError('PKS_OUT_OF_RANGE', 'PCR index must be 0..23');
  const text = await tpm2('tpm2_pcrread', [`${PCR_BANK}:${pcrs.join(',')}`], tcti);
  const out = new Map<number, Buffer>();
  let inBank = false;
  for (const line of text.split('\n')) {
    if (/^\s*\w+:\s*$/.test(line)) inBank = line.trim() === `${PCR_BANK}:`;
    const m = /^\s*(\d+)\s*:\s*0x([0-9A-Fa-f]{64})\s*$/.exec(line);
    if (inBank && m) out.set(Number(m[1]), Buffer.from(m[2]!, 'hex'));
  }
  for (const p of pcrs) if (!out.has(p)) throw pksError('PKS_SERVICE_UNAVAILABLE', `TPM: PCR ${p} not in the ${PCR_BANK} bank`);
  return out;
}

export async function extendPcr(pcr: number, digest: Buffer, tcti = DEFAULT_TCTI): Promise<void> {
  if (!Number.isInteger(pcr) || pcr < 0 || pcr > 23) throw pksError('PKS_OUT_OF_RANGE', 'PCR index must be 0..23');
  await tpm2('tpm2_pcrextend', [`${pcr}:${PCR_BANK}=${digest.toString('hex')}`], tcti);
}

export interface MeasureOptions {
  readonly rootfs?: string;
  readonly tcti?: string;
  readonly logPath?: string;
  /** where the live measurement goes (the vault's gate reads it); default LIVE_MEASUREMENT_PATH */
  readonly livePath?: string;
  readonly now?: () => Date;
}

async function writeAtomic(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o755 });
  await writeFile(`${file}.tmp`, text, { mode: 0o644 });
  await rename(`${file}.tmp`, file);
}

/**
 * The re-measurement (pks-measure --live, on pks-measure-live.timer): hashes the trees again and
 * reads PCR 15 back, extending nothing (PCR 15 stays the boot's record), and writes the result
 * for the vault's gate. A file changed while the box runs shows here within one period; the file
 * restored shows as restored in the next one, so the gate recovers without a reboot.
 */
export async function measureLive(opts: MeasureOptions = {}): Promise<LiveMeasurement> {
  const tcti = opts.tcti ?? DEFAULT_TCTI;
  const pcr15 = (await readPcrs([APP_PCR], tcti)).get(APP_PCR)!;
  const events = await measureTrees(opts.rootfs ?? '/');
  const live: LiveMeasurement = {
    version: 1,
    measuredAt: (opts.now ?? (() => new Date()))().toISOString(),
    pcr15: pcr15.toString('hex'),
    trees: events.map((e) => ({ name: e.name, digest: e.digest })),
  };
  await writeAtomic(opts.livePath ?? LIVE_MEASUREMENT_PATH, JSON.stringify(live) + '\n');
  return live;
}

/**
 * The boot measurement. Refuses to extend a PCR 15 that is not at its reset value: a second run
 * in the same boot would otherwise stack measurements and make a good system look tampered
 * (and a tampered one could not be told from that).
 */
export async function measureBoot(opts: MeasureOptions = {}): Promise<MeasurementLog> {
  const tcti = opts.tcti ?? DEFAULT_TCTI;
  const logPath = opts.logPath ?? MEASUREMENTS_PATH;
  const before = (await readPcrs([APP_PCR], tcti)).get(APP_PCR)!;
  if (!before.equals(ZERO_PCR)) throw pksError('PKS_CONFLICT', `PCR ${APP_PCR} was already extended in this boot`);
  const events = await measureTrees(opts.rootfs ?? '/');
  for (const e of events) await extendPcr(APP_PCR, parseDigestHex(e.digest), tcti);
  const after = (await readPcrs([APP_PCR], tcti)).get(APP_PCR)!;
  const log: MeasurementLog = {
    version: 1,
    pcr: APP_PCR,
    bank: PCR_BANK,
    measuredAt: (opts.now ?? (() => new Date()))().toISOString(),
    events,
    pcrValue: after.toString('hex'),
  };
  await writeAtomic(logPath, JSON.stringify(log, null, 2) + '\n');
  // the first live measurement is the boot's own: the vault's gate has its input from the start
  const live: LiveMeasurement = { version: 1, measuredAt: log.measuredAt, pcr15: log.pcrValue, trees: events.map((e) => ({ name: e.name, digest: e.digest })) };
  await writeAtomic(opts.livePath ?? LIVE_MEASUREMENT_PATH, JSON.stringify(live) + '\n');
  return log;
}

/** Reads and validates a measurement log written by measureBoot. */
export async function readMeasurementLog(logPath = MEASUREMENTS_PATH): Promise<MeasurementLog> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(logPath, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw pksError('PKS_NOT_FOUND', `no measurement log at ${logPath}`);
    throw pksError('PKS_CONFIG_INVALID', `measurement log ${logPath} is not JSON`, e);
  }
  const bad = (what: string): never => {
    throw pksError('PKS_CONFIG_INVALID', `measurement log: ${what}`);
  };
  const o = raw as Partial<MeasurementLog>;
  if (typeof o !== 'object' || o === null || o.version !== 1 || o.pcr !== APP_PCR || o.bank !== PCR_BANK) bad('wrong version, PCR or bank');
  if (!Array.isArray(o.events) || o.events.length > 16) bad('events missing');
  for (const e of o.events!) {
    if (typeof e?.name !== 'string' || typeof e.path !== 'string' || typeof e.digest !== 'string' || !Number.isSafeInteger(e.files) || !Number.isSafeInteger(e.bytes)) bad('malformed event');
    parseDigestHex(e.digest);
  }
  if (typeof o.pcrValue !== 'string') bad('pcrValue missing');
  parseDigestHex(o.pcrValue!);
  return o as MeasurementLog;
}
