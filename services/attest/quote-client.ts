// The uplink's quote tool on the box (its config `attest.command`): the same arguments and the
// same one JSON line on stdout as quote-cli, but the TPM work is done by pks-quote@.service
// behind /run/pks/quote.sock (quote-socket.ts), so the network-facing uplink never holds the TPM.
//   quote-client.js enroll | activate --credential B64 | quote --nonce HEX
// Env PKS_QUOTE_SOCKET (default /run/pks/quote.sock). Exit 1 when the answer is an error.
import { connect } from 'node:net';

const sock = process.env.PKS_QUOTE_SOCKET ?? '/run/pks/quote.sock';
const fail = (code: string, detail: string): void => {
  process.stdout.write(JSON.stringify({ error: { code, detail } }) + '\n');
  process.exitCode = 1;
};
const c = connect(sock);
let out = '';
c.setTimeout(150_000, () => {
  c.destroy();
  fail('PKS_SERVICE_UNAVAILABLE', 'TPM quote service did not answer in time');
});
c.on('connect', () => c.write(JSON.stringify({ args: process.argv.slice(2) }) + '\n'));
c.on('data', (b) => {
  out += b.toString('utf8');
  if (out.length > 4 << 20) c.destroy();
});
c.on('error', (e) => fail('PKS_SERVICE_UNAVAILABLE', `TPM quote service unreachable: ${e.message}`.slice(0, 200)));
c.on('end', () => {
  const line = out.trim().split('\n').pop() ?? '';
  try {
    const j = JSON.parse(line) as { error?: unknown };
    process.stdout.write(line + '\n');
    if (j.error) process.exitCode = 1;
  } catch {
    fail('PKS_SERVICE_UNAVAILABLE', 'TPM quote service gave no answer');
  }
});
