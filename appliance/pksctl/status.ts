// pksctl status: the box's measured boot. Reads the TPM directly (root, /dev/tpmrm0) rather than
// asking a service, so it answers even when every service is down, which is when it is needed.
// Exit code 0 when every PCR replays from its log and equals the image's expected value.
import { parseArgs } from 'node:util';
import { pksError } from '../errors.js';
import { attestStatus, type AttestStatus } from '../../services/attest/verify.js';

const short = (h: string | undefined): string => (h === undefined ? '-' : `${h.slice(0, 16)}…`);
const mark = (b: boolean | undefined): string => (b === undefined ? '-' : b ? 'ok' : 'MISMATCH');

export function renderStatus(s: AttestStatus): string {
  const lines = [`measured boot: ${s.ok ? 'OK (all measurements are the expected ones)' : 'NOT OK'}`, ''];
  lines.push('PCR  actual             expected           replay           expected?');
  for (const p of s.pcrs) {
    const replay = p.replayOk ? (p.phase ? `ok+${p.phase}` : 'ok') : 'FAILED';
    lines.push(`${String(p.pcr).padStart(3)}  ${short(p.actual).padEnd(18)} ${short(p.expected).padEnd(18)} ${replay.padEnd(16)} ${mark(p.expectedOk)}`);
  }
  lines.push('', 'application measurements (PCR 15):');
  if (s.measurements.length === 0) lines.push('  none (pks-measure.service has not run)');
  for (const m of s.measurements) {
    lines.push(`  ${m.name.padEnd(11)} ${m.path.padEnd(13)} ${short(m.digest)} ${String(m.files).padStart(6)} files  ${mark(m.ok)}`);
  }
  if (s.problems.length > 0) lines.push('', 'problems:', ...s.problems.map((p) => `  - ${p}`));
  return lines.join('\n');
}

export async function statusCommand(argv: string[], out: (s: string) => void): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        json: { type: 'boolean' },
        tcti: { type: 'string' },
        expected: { type: 'string' },
        'event-log': { type: 'string' },
        measurements: { type: 'string' },
      },
      strict: true,
    }));
  } catch {
    throw pksError('PKS_BAD_REQUEST', 'usage: pksctl status [--json] [--tcti T] [--expected F] [--event-log F] [--measurements F]');
  }
  const s = await attestStatus({
    ...(values.tcti ? { tcti: values.tcti } : {}),
    ...(values.expected ? { expectedPath: values.expected } : {}),
    ...(values['event-log'] ? { eventLogPath: values['event-log'] } : {}),
    ...(values.measurements ? { measurementsPath: values.measurements } : {}),
  });
  out(values.json ? JSON.stringify(s) : renderStatus(s));
  return s.ok ? 0 : 1;
}
