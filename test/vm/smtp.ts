// The plant's mail relay for the VM test: a real SMTP server on the host's 127.0.0.1:PORT, which
// the guest reaches as 10.0.2.2:PORT through QEMU's user network (the dev site's SMTP_HOST and
// SMTP_PORT). Each message is appended to FILE as one JSON line {at, to, subject, text}, flushed
// as it comes, so vm-test can wait for the sentinel's alert. Prints "ready" once listening.
// Usage: node --import tsx test/vm/smtp.ts --port 12525 --out FILE
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startSmtp } from '../../scripts/plant/smtp.js';

const { values } = parseArgs({ options: { port: { type: 'string', default: '12525' }, out: { type: 'string' } }, strict: true });
if (!values.out) throw new Error('usage: smtp.ts --port P --out FILE');
const out = values.out;
const smtp = await startSmtp({
  port: Number(values.port),
  onMail: (m) => appendFileSync(out, JSON.stringify({ at: new Date().toISOString(), to: m.to, subject: m.subject, text: m.text.slice(0, 4000) }) + '\n'),
});
process.stdout.write('ready\n');
const stop = (): void => void smtp.stop().finally(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
