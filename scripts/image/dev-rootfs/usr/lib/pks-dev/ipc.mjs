// Dev image only: one verb on a PKS service's admin socket, /run/pks/<service>/pksctl.sock (the
// image has no curl). Usage: node ipc.mjs SERVICE VERB [JSON]; prints the answer's body, exit
// 0 on 2xx, 1 otherwise, 3 when the socket does not answer.
import http from 'node:http';

const [service, verb, body = '{}'] = process.argv.slice(2);
if (!/^[a-z][a-z0-9-]{0,31}$/.test(service ?? '') || !/^[a-z][a-z0-9-]{0,31}$/.test(verb ?? '')) {
  console.error('usage: ipc.mjs SERVICE VERB [JSON]');
  process.exit(2);
}
const req = http.request(
  { socketPath: `/run/pks/${service}/pksctl.sock`, method: 'POST', path: `/v1/${verb}`, headers: { 'content-type': 'application/json' }, timeout: 60_000 },
  (res) => {
    let out = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (out += d));
    res.on('end', () => {
      process.stdout.write(out + '\n');
      process.exitCode = res.statusCode >= 200 && res.statusCode < 300 ? 0 : 1;
    });
  },
);
req.on('error', (e) => {
  console.error(`ipc.mjs: ${service}: ${e.code ?? e.message}`);
  process.exitCode = 3;
});
req.on('timeout', () => req.destroy(new Error('timeout')));
req.end(body);
