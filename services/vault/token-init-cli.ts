// Setup's HSM step (rootfs-overlay/usr/lib/pks-setup/setup.sh), run as the vault's user:
//   token-init --module LIB --label LABEL --so-pin-file FILE --pin-file FILE
// Only file paths on the command line (see token-init.ts). SOFTHSM2_CONF from the environment.
import { parseArgs } from 'node:util';
import { asPksError, pksError } from '../../appliance/errors.js';
import { initToken, readPinFile } from './token-init.js';

export async function tokenInitCli(argv: string[]): Promise<string> {
  const { values: o } = parseArgs({
    args: argv,
    options: { module: { type: 'string' }, label: { type: 'string' }, 'so-pin-file': { type: 'string' }, 'pin-file': { type: 'string' } },
    strict: true,
  });
  if (!o.module || !o.label || !o['so-pin-file'] || !o['pin-file']) throw pksError('PKS_BAD_REQUEST', 'usage: token-init --module LIB --label LABEL --so-pin-file FILE --pin-file FILE');
  const result = await initToken({
    module: o.module,
    label: o.label,
    soPin: await readPinFile(o['so-pin-file']),
    pin: await readPinFile(o['pin-file']),
    ...(process.env.SOFTHSM2_CONF ? { softhsm2Conf: process.env.SOFTHSM2_CONF } : {}),
  });
  return `token '${o.label}' ${result}`;
}

if (process.argv[1]?.endsWith('token-init-cli.js') || process.argv[1]?.endsWith('token-init-cli.ts')) {
  tokenInitCli(process.argv.slice(2)).then(
    (line) => process.stdout.write(`${line}\n`),
    (err) => {
      const e = asPksError(err);
      process.stderr.write(`pks-token-init: ${e.code}: ${e.detail}\n`);
      process.exitCode = 1;
    },
  );
}
