// Checks the running system's measurements three ways:
//   1. the firmware event log replays to the live PCRs (the log is honest about what was
//      measured; PCR 11 may also carry systemd-pcrphase words, which are not in that log);
//   2. our measurement log (/run/pks/measurements.json) replays to the live PCR 15;
//   3. the live PCRs equal the values the image build recorded (expected-pcrs.json), with the
//      configuration's measurement taken from the provisioning record when the box was set up
//      (site-expected.ts): the image cannot know the site's config, plant IT's setup can.
import { readFile } from 'node:fs/promises';
import { isPksError, pksError } from '../../appliance/errors.js';
import { parseEventLog, replayEventLog } from './eventlog.js';
import { forLivePcr4, readExpected, type ExpectedPcrs } from './expected.js';
import {
  APP_PCR,
  DEFAULT_TCTI,
  EVENT_LOG_PATH,
  EXPECTED_PATH,
  MEASUREMENTS_PATH,
  pcr15Of,
  readMeasurementLog,
  readPcrs,
  type MeasurementLog,
} from './measure.js';
import { PCRPHASE_WORDS, ZERO_PCR, extend, sha256 } from './pcr.js';
import { SITE_EXPECTED_PATH, effectiveMeasurements, readSiteExpected, type SiteExpected } from './site-expected.js';

export interface PcrStatus {
  readonly pcr: number;
  readonly actual: string;
  readonly expected: string | undefined;
  /** What the relevant log replays to, when there is one for this PCR. */
  readonly replayed: string | undefined;
  /** For PCR 11: the systemd-pcrphase words the live value includes beyond the event log. */
  readonly phase?: string | undefined;
  readonly replayOk: boolean;
  readonly expectedOk: boolean | undefined;
}

export interface MeasurementStatus {
  readonly name: string;
  readonly path: string;
  readonly digest: string;
  readonly expected: string | undefined;
  readonly ok: boolean | undefined;
  readonly files: number;
}

export interface AttestStatus {
  /** Every PCR replays from its log and equals its expected value. */
  readonly ok: boolean;
  readonly pcrs: PcrStatus[];
  readonly measurements: MeasurementStatus[];
  readonly problems: string[];
  /** Where PCR 15's configuration expectation comes from. */
  readonly configExpectation: 'image' | 'provisioning' | 'none';
}

export interface StatusOptions {
  readonly tcti?: string;
  readonly expectedPath?: string;
  readonly eventLogPath?: string;
  readonly measurementsPath?: string;
  readonly sitePath?: string;
}

/** PCRs we report on: the boot chain we have expectations for, and ours. */
export const REPORTED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, APP_PCR] as const;

/** Which run of systemd-pcrphase words turns `fromLog` into `actual`, if any. */
function pcrphaseSuffix(fromLog: Buffer, actual: Buffer): string | undefined {
  if (fromLog.equals(actual)) return '';
  // words come in boot order but the initrd ones only with a systemd initrd: try each start
  for (let start = 0; start < PCRPHASE_WORDS.length; start++) {
    let v = fromLog;
    for (let i = start; i < PCRPHASE_WORDS.length; i++) {
      v = extend(v, sha256(PCRPHASE_WORDS[i]!));
      if (v.equals(actual)) return PCRPHASE_WORDS.slice(start, i + 1).join(',');
    }
  }
  return undefined;
}

export async function attestStatus(opts: StatusOptions = {}): Promise<AttestStatus> {
  const problems: string[] = [];
  const soft = async <T>(what: string, f: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await f();
    } catch (e) {
      problems.push(`${what}: ${isPksError(e) ? e.detail : 'unreadable'}`);
      return undefined;
    }
  };
  const live = await readPcrs(REPORTED_PCRS, opts.tcti ?? DEFAULT_TCTI);
  const read = await soft('expected values', () => readExpected(opts.expectedPath ?? EXPECTED_PATH));
  // an A/B image records both slots' boot chains: compare with the one this boot loaded
  const image: ExpectedPcrs | undefined = read && forLivePcr4(read, live.get(4)!.toString('hex'));
  const site: SiteExpected | undefined = await soft('provisioning record', () => readSiteExpected(opts.sitePath ?? SITE_EXPECTED_PATH));
  let expected = image;
  if (image && site) {
    const measurements = effectiveMeasurements(image.measurements, site);
    expected = { ...image, measurements, pcrs: { ...image.pcrs, [String(APP_PCR)]: pcr15Of(measurements).toString('hex') } };
  }
  const fwLog = await soft('firmware event log', async () => replayEventLog(parseEventLog(await readFile(opts.eventLogPath ?? EVENT_LOG_PATH).catch((e) => {
    throw pksError('PKS_NOT_FOUND', `cannot read ${opts.eventLogPath ?? EVENT_LOG_PATH}`, e);
  }))));
  const appLog: MeasurementLog | undefined = await soft('measurement log', () => readMeasurementLog(opts.measurementsPath ?? MEASUREMENTS_PATH));

  const pcrs: PcrStatus[] = [];
  for (const pcr of REPORTED_PCRS) {
    const actual = live.get(pcr)!;
    let replayed: Buffer | undefined;
    let phase: string | undefined;
    let replayOk: boolean;
    if (pcr === APP_PCR) {
      replayed = appLog ? pcr15Of(appLog.events) : undefined;
      replayOk = replayed !== undefined && replayed.equals(actual);
    } else {
      replayed = fwLog ? fwLog.get(pcr) ?? ZERO_PCR : undefined;
      if (replayed && pcr === 11) {
        phase = pcrphaseSuffix(replayed, actual);
        replayOk = phase !== undefined;
      } else {
        replayOk = replayed !== undefined && replayed.equals(actual);
      }
    }
    const exp = expected?.pcrs[String(pcr)];
    const expectedOk = exp === undefined ? undefined : exp === actual.toString('hex');
    if (!replayOk) problems.push(`PCR ${pcr}: does not replay from its log`);
    if (expectedOk === false) problems.push(`PCR ${pcr}: not the expected value`);
    pcrs.push({ pcr, actual: actual.toString('hex'), expected: exp, replayed: replayed?.toString('hex'), ...(pcr === 11 ? { phase } : {}), replayOk, expectedOk });
  }
  if (expected && expected.pcrs['11'] !== undefined && !Object.values(expected.pcr11Phases).includes(live.get(11)!.toString('hex'))) {
    // already reported as "not the expected value"; name the likely cause
    problems.push('PCR 11: the UKI or its boot phase is not the one the image was built with');
  }

  const measurements: MeasurementStatus[] = (appLog?.events ?? []).map((e) => {
    const want = expected?.measurements.find((m) => m.name === e.name)?.digest;
    return { name: e.name, path: e.path, digest: e.digest, expected: want, ok: want === undefined ? undefined : want === e.digest, files: e.files };
  });
  for (const m of measurements) if (m.ok === false) problems.push(`${m.name} (${m.path}) differs from the image`);

  const ok = problems.length === 0 && pcrs.every((p) => p.replayOk && p.expectedOk !== false) && expected !== undefined;
  return { ok, pcrs, measurements, problems, configExpectation: !expected ? 'none' : site ? 'provisioning' : 'image' };
}
