// The TPM quote tool behind a socket (issue 12): the uplink faces the network and gets no TPM
// access of its own (its unit keeps PrivateDevices=yes); it asks this instead, through
// /run/pks/quote.sock (pks-quote.socket, Accept=yes: one short-lived instance of
// pks-quote@.service per request, root without capabilities, only /dev/tpmrm0, no network).
// One request per connection: a single JSON line `{"args":[...]}`, one of exactly the three
// forms of quote-cli (enroll | activate --credential B64 | quote --nonce HEX); anything else is
// refused with a coded error before the TPM is touched. The answer is quote-cli's JSON line.
//   stdin/stdout = the accepted connection (StandardInput=socket)
import { asPksError, pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { quoteCommand } from './quote-cli.js';

const MAX_LINE = 4096; // a credential blob is < 1 KiB of base64

/** The argv a request may ask for, or a coded refusal. */
export function checkQuoteRequest(line: string): string[] {
  const req = parseJsonOr('PKS_BAD_REQUEST', 'quote request', line);
  const args = (req as { args?: unknown })?.args;
  if (!req || typeof req !== 'object' || Object.keys(req).length !== 1 || !Array.isArray(args) || !args.every((a) => typeof a === 'string'))
    throw pksError('PKS_BAD_REQUEST', 'quote request is {"args":[strings]}');
  const [verb, flag, value, ...rest] = args as string[];
  if (verb === 'enroll' && args.length === 1) return ['enroll'];
  if (verb === 'activate' && flag === '--credential' && rest.length === 0 && typeof value === 'string' && value.length <= 2048 && /^[A-Za-z0-9+/]+={0,2}$/.test(value))
    return ['activate', '--credential', value];
  if (verb === 'quote' && flag === '--nonce' && rest.length === 0 && typeof value === 'string' && /^[0-9a-f]{64}$/.test(value)) return ['quote', '--nonce', value];
  throw pksError('PKS_BAD_REQUEST', 'quote request: enroll | activate --credential B64 | quote --nonce HEX');
}

async function readLine(): Promise<string> {
  let buf = '';
  for await (const chunk of process.stdin) {
    buf += (chunk as Buffer).toString('utf8');
    if (buf.length > MAX_LINE) throw pksError('PKS_BAD_REQUEST', 'quote request too long');
    const nl = buf.indexOf('\n');
    if (nl >= 0) return buf.slice(0, nl);
  }
  return buf;
}

async function main(): Promise<void> {
  // in this process: one node start per request is what the box pays, not two
  process.stdout.write(JSON.stringify(await quoteCommand(checkQuoteRequest(await readLine()))) + '\n');
}

if (process.argv[1]?.endsWith('quote-socket.js') || process.argv[1]?.endsWith('quote-socket.ts')) {
  await main().catch((err) => {
    const e = asPksError(err);
    process.stdout.write(JSON.stringify({ error: { code: e.code, detail: e.detail } }) + '\n');
    process.exitCode = 1;
  });
}
