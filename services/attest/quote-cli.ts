// The TPM side of remote attestation as a command (issue 12), for the uplink: the uplink faces the
// network and may not import another service's code, so it runs this and reads one JSON object
// from stdout. Each run touches the TPM only for the step asked:
//   quote-cli.js enroll                         {ekCert, akPublic, pcr15, measurementLog?}   (AK made once at setup, kept)
//   quote-cli.js activate --credential B64      {secret}                                     (TPM2_ActivateCredential)
//   quote-cli.js quote --nonce HEX              {message, signature, pcrs, eventLog, measurementLog?}
// Binary values are base64. Env PKS_TPM_TCTI (default device:/dev/tpmrm0), PKS_EVENT_LOG (default
// the kernel's firmware event log), PKS_MEASUREMENTS (default pks-measure's
// /run/pks/measurements.json, sent as it is: the KMS replays it; absent when pks-measure wrote
// none). A failure prints {error: {code, detail}} and exits 1.
import { parseArgs } from 'node:util';
import { asPksError, pksError } from '../../appliance/errors.js';
import { readFile } from 'node:fs/promises';
import { MEASUREMENT_LOG_MAX } from '../../appliance/contracts/attestation.js';
import { APP_PCR, DEFAULT_TCTI, EVENT_LOG_PATH, MEASUREMENTS_PATH, readPcrs } from './measure.js';
import { activateCredential, enrollAk, quote, readEventLog } from './quote.js';

const tcti = process.env.PKS_TPM_TCTI ?? DEFAULT_TCTI;
const b64 = (b: Buffer) => b.toString('base64');

/** pks-measure's PCR 15 log, as bytes in base64; none written (no pks-measure this boot): nothing. */
async function measurementLog(): Promise<{ measurementLog?: string }> {
  const file = process.env.PKS_MEASUREMENTS ?? MEASUREMENTS_PATH;
  let raw: Buffer;
  try {
    raw = await readFile(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw pksError('PKS_SERVICE_UNAVAILABLE', `measurement log ${file} is not readable`);
  }
  if (raw.length > MEASUREMENT_LOG_MAX) throw pksError('PKS_TOO_LARGE', 'measurement log is too large');
  return { measurementLog: b64(raw) };
}

/** One of the three commands on `args` (also what quote-socket runs for the uplink, in-process). */
export async function quoteCommand(args: string[]): Promise<Record<string, unknown>> {
  const { values, positionals } = parseArgs({ args, options: { credential: { type: 'string' }, nonce: { type: 'string' } }, allowPositionals: true, strict: true });
  switch (positionals[0]) {
    case 'enroll': {
      const e = await enrollAk(tcti);
      const pcr15 = (await readPcrs([APP_PCR], tcti)).get(APP_PCR)!;
      return { ekCert: b64(e.ekCert), akPublic: b64(e.akPublic), pcr15: pcr15.toString('hex'), ...(await measurementLog()) };
    }
    case 'activate': {
      if (!values.credential || !/^[A-Za-z0-9+/]+={0,2}$/.test(values.credential)) throw pksError('PKS_BAD_REQUEST', '--credential BASE64 is required');
      return { secret: b64(await activateCredential(tcti, Buffer.from(values.credential, 'base64'))) };
    }
    case 'quote': {
      if (!values.nonce || !/^[0-9a-f]{64}$/.test(values.nonce)) throw pksError('PKS_BAD_HEX', '--nonce is 32 bytes of hex');
      const q = await quote(tcti, Buffer.from(values.nonce, 'hex'));
      const eventLog = await readEventLog(process.env.PKS_EVENT_LOG ?? EVENT_LOG_PATH);
      return { message: b64(q.message), signature: b64(q.signature), pcrs: b64(q.pcrs), eventLog: b64(eventLog), ...(await measurementLog()) };
    }
    default:
      throw pksError('PKS_BAD_REQUEST', 'usage: quote-cli enroll | activate --credential B64 | quote --nonce HEX');
  }
}

if (process.argv[1]?.endsWith('quote-cli.js') || process.argv[1]?.endsWith('quote-cli.ts')) {
  try {
    process.stdout.write(JSON.stringify(await quoteCommand(process.argv.slice(2))) + '\n');
  } catch (err) {
    const e = asPksError(err);
    process.stdout.write(JSON.stringify({ error: { code: e.code, detail: e.detail } }) + '\n');
    process.exitCode = 1;
  }
}
