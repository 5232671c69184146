// The sealing steps as commands, for the image build, setup and the unseal unit (issue 12):
//   sign-policy --expected expected-pcrs.json --key IMAGE_KEY.pem [--out FILE]
//       build: signs PolicyPCR(11) for every PCR 11 value of the UKI's boot phases
//   seal --in FILE --out BLOB --pubkey IMAGE_PUB.pem [--tcti T]
//       setup: seals a secret (the HSM PIN; a TLS/MQTT key file through a sealed AES key) to PCR 7 + the
//       signed PCR 11 policy; the caller then deletes the clear file
//   unseal --blob BLOB --out FILE [--blob BLOB --out FILE ...] --pubkey IMAGE_PUB.pem --signed FILE [--tcti T]
//       boot (root oneshot before the vault): opens it into a file on tmpfs (0400) for
//       LoadCredential=; refuses with PKS_TPM_UNSEAL under another UKI or Secure Boot state
import { readFile, rename, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { asPksError, pksError } from '../../appliance/errors.js';
import { allPcr11Values, readExpected } from './expected.js';
import { DEFAULT_TCTI } from './measure.js';
import { parseDigestHex } from './pcr.js';
import { decodeBlob, encodeBlob, parseSignedPolicyFile, sealFile, signPcr11Policies, unsealFile } from './seal.js';

async function writeAtomic(file: string, data: string | Buffer, mode: number): Promise<void> {
  await writeFile(`${file}.tmp`, data, { mode });
  await rename(`${file}.tmp`, file);
}

export async function sealCli(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const { values: o } = parseArgs({
    args: rest,
    options: { expected: { type: 'string' }, key: { type: 'string' }, out: { type: 'string', multiple: true }, in: { type: 'string', multiple: true }, pubkey: { type: 'string' }, blob: { type: 'string', multiple: true }, signed: { type: 'string' }, tcti: { type: 'string' } },
    strict: true,
  });
  const need = (k: keyof typeof o): string => {
    const v = o[k];
    const one = Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v;
    if (typeof one !== 'string') throw pksError('PKS_BAD_REQUEST', `${cmd} needs one --${k}`);
    return one;
  };
  const tcti = o.tcti ?? process.env.PKS_TPM_TCTI ?? DEFAULT_TCTI;
  switch (cmd) {
    case 'sign-policy': {
      const expected = await readExpected(need('expected'));
      // every slot's UKI (the A/B layout): the PIN opens on whichever slot booted
      const values = allPcr11Values(expected).map(parseDigestHex);
      if (values.length === 0) throw pksError('PKS_CONFIG_INVALID', 'expected-pcrs.json has no PCR 11 phases (no UKI?)');
      const text = JSON.stringify(signPcr11Policies(values, await readFile(need('key'), 'utf8')), null, 1) + '\n';
      if (o.out) await writeAtomic(need('out'), text, 0o644);
      else process.stdout.write(text);
      return 0;
    }
    case 'seal': {
      // several --in/--out pairs in one run: setup seals both PINs for one node start (slow under TCG)
      const ins = o.in ?? [];
      const outs = o.out ?? [];
      if (ins.length === 0 || ins.length !== outs.length) throw pksError('PKS_BAD_REQUEST', 'seal needs --in FILE --out BLOB pairs');
      const publicKeyPem = await readFile(need('pubkey'), 'utf8');
      for (let i = 0; i < ins.length; i++) await writeAtomic(outs[i]!, encodeBlob(await sealFile({ tcti, data: await readFile(ins[i]!), publicKeyPem })), 0o600);
      return 0;
    }
    case 'unseal': {
      // several --blob/--out pairs in one run (the PIN and the TLS/MQTT keys at boot); all or none:
      // a blob that does not open leaves no other secret behind
      const blobs = o.blob ?? [];
      const outs = o.out ?? [];
      if (blobs.length === 0 || blobs.length !== outs.length) throw pksError('PKS_BAD_REQUEST', 'unseal needs --blob BLOB --out FILE pairs');
      const signed = parseSignedPolicyFile(JSON.parse(await readFile(need('signed'), 'utf8')));
      const publicKeyPem = await readFile(need('pubkey'), 'utf8');
      const secrets: Buffer[] = [];
      for (const b of blobs) secrets.push(await unsealFile({ tcti, blob: decodeBlob(await readFile(b, 'utf8')), publicKeyPem, signed }));
      for (let i = 0; i < outs.length; i++) await writeAtomic(outs[i]!, secrets[i]!, 0o400);
      return 0;
    }
    default:
      throw pksError('PKS_BAD_REQUEST', 'usage: seal-cli sign-policy|seal|unseal ...');
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('seal-cli.js')) {
  sealCli(process.argv.slice(2)).then(
    (code) => (process.exitCode = code),
    (err) => {
      const e = asPksError(err);
      process.stderr.write(`pks-seal: ${e.code}: ${e.detail}\n`);
      // which tpm2 step answered what (its return code), for the journal: nothing of a secret is in it
      const cause = (e as { cause?: { detail?: string; message?: string } }).cause;
      if (cause) process.stderr.write(`pks-seal: at: ${String(cause.detail ?? cause.message ?? cause).slice(0, 300)}\n`);
      process.exitCode = 1;
    },
  );
}
