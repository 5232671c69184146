// The version floor as a command, for the image's setup (issue 12, item 4): `define` makes the
// TPM NV counter once (idempotent: a second setup keeps the floor), `read` prints it.
//   counter-cli.js define|read [--tcti T]      prints {"index":"0x01500016","floor":N}
// A failure prints {error: {code, detail}} and exits 1.
import { parseArgs } from 'node:util';
import { asPksError, pksError } from '../../appliance/errors.js';
import { VERSION_FLOOR_NV, defineVersionCounter, readVersionCounter } from './counter.js';
import { DEFAULT_TCTI } from './measure.js';

try {
  const { values, positionals } = parseArgs({ options: { tcti: { type: 'string' } }, allowPositionals: true, strict: true });
  const tcti = values.tcti ?? process.env.PKS_TPM_TCTI ?? DEFAULT_TCTI;
  const cmd = positionals[0];
  if (cmd !== 'define' && cmd !== 'read') throw pksError('PKS_BAD_REQUEST', 'usage: counter-cli define|read [--tcti T]');
  const floor = cmd === 'define' ? await defineVersionCounter(tcti) : await readVersionCounter(tcti);
  process.stdout.write(JSON.stringify({ index: VERSION_FLOOR_NV, floor: Number(floor) }) + '\n');
} catch (err) {
  const e = asPksError(err);
  process.stdout.write(JSON.stringify({ error: { code: e.code, detail: e.detail } }) + '\n');
  process.exitCode = 1;
}
