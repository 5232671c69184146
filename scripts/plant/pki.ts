// Test-side wrapper of scripts/pki.sh (the development PKI): CAs and leaf certificates as
// files, EC P-256 / SHA-256. Arguments go to execFile as a list, never through a shell.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const script = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../pki.sh');

export interface KeyPair {
  /** path of the PEM private key (mode 0600) */
  key: string;
  /** path of the PEM certificate */
  cert: string;
}

export interface IssueOptions {
  cn: string;
  server?: boolean;
  client?: boolean;
  /** the KMS batch-signer EKU, which the boxes require of a batch signer */
  batchSigner?: boolean;
  /** subjectAltName entries such as 'DNS:localhost' or 'IP:127.0.0.1' */
  san?: string[];
  days?: number;
  ou?: string;
}

async function pki(args: string[]): Promise<void> {
  try {
    await run(script, args, { timeout: 30_000 });
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    throw new Error(`pki.sh ${args[0]} failed (exit ${e.code ?? '?'}): ${(e.stderr ?? '').trim()}`);
  }
}

/** Creates (or keeps) the self-signed CA DIR/NAME.{key,crt}. */
export async function makeCa(dir: string, name: string): Promise<KeyPair> {
  await pki(['ca', dir, name]);
  return { key: path.join(dir, `${name}.key`), cert: path.join(dir, `${name}.crt`) };
}

/** Issues (or keeps an identical) DIR/NAME.{key,crt} signed by the CA DIR/CA.{key,crt}. */
export async function issue(dir: string, ca: string, name: string, opts: IssueOptions): Promise<KeyPair> {
  const args = ['issue', dir, ca, name, '--cn', opts.cn];
  if (opts.server) args.push('--server');
  if (opts.client) args.push('--client');
  if (opts.batchSigner) args.push('--batch-signer');
  if (opts.san && opts.san.length > 0) args.push('--san', opts.san.join(','));
  if (opts.days !== undefined) args.push('--days', String(opts.days));
  if (opts.ou !== undefined) args.push('--ou', opts.ou);
  await pki(args);
  return { key: path.join(dir, `${name}.key`), cert: path.join(dir, `${name}.crt`) };
}
