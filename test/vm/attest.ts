// The reference KMS's attestation of the VM's box (issue 12): the KMS's own verifier
// (scripts/kms/attest.ts, the code the KMS runs on `attest` messages, scripts/kms/attest-link.ts)
// fed what the box's uplink would send, taken from the guest as the uplink takes it (its user,
// quote-client through pks-quote.socket, pks-quote@.service on the TPM): the AK enrolled against the VM
// TPM's EK certificate (swtpm's local CA, which the dev KMS pins) by credential activation, then a
// quote of PCRs 0-15 on a fresh KMS nonce with the firmware event log, and the vault's gate
// report signed by the box's HSM identity key. The reference values are the ones the image build
// signed with the image signing key (out/reference-values.json). The MQTT leg is proven on the
// host (test/uplink/attest.test.ts); here the evidence is the VM's real TPM and vault.
// The Attestor's state persists in the state directory, so later runs see the same enrollment.
// Usage: node --import tsx test/vm/attest.ts --state DIR
// Prints one JSON line: {"state":"attested"|"untrusted"|...,"release":bool,"code"?:...,"reason"?:...}
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Attestor, type ReferenceValues } from '../../scripts/kms/attest.js';
import { onAttestMessage } from '../../scripts/kms/attest-link.js';
import { asPksError } from '../../appliance/errors.js';
import { guest } from './guest.js';
import { BOX_ID, ROOT } from './site.js';

const { values } = parseArgs({ options: { state: { type: 'string' }, out: { type: 'string' } }, strict: true });
if (!values.state) throw new Error('usage: attest.ts --state DIR [--out IMAGE_OUT_DIR]');
const state = values.state;
const out = values.out ?? path.join(ROOT, '.cache/image/out');
const g = guest(state);
const CA = '/var/lib/swtpm-localca';
const a = new Attestor({
  ekCaPems: [readFileSync(path.join(CA, 'issuercert.pem'), 'utf8'), readFileSync(path.join(CA, 'swtpm-localca-rootca-cert.pem'), 'utf8')],
  reference: JSON.parse(readFileSync(path.join(out, 'reference-values.json'), 'utf8')) as ReferenceValues,
  buildKeyPem: readFileSync(path.join(out, 'pcr-signing.pem'), 'utf8'),
  windowMs: 600_000,
  stateFile: path.join(state, 'kms-attest.json'),
});
await a.load();

// the TPM side exactly as the box's uplink reaches it: its user and groups (pks-quote.socket is
// the pks-uplink group's, under /run/pks which pks-ipc may enter), quote-client through the socket
const cli = (args: string): Promise<Record<string, string>> =>
  g
    .sh(`setpriv --reuid pks-uplink --regid pks-uplink --groups pks-ipc node /usr/lib/pks/dist/services/attest/quote-client.js ${args}`, 300)
    .then((o) => JSON.parse(o.trim().split('\n').pop()!) as Record<string, string>);
let n = 0;
const ask = async (m: Record<string, unknown>): Promise<Record<string, unknown>> => {
  const r = await onAttestMessage(a, BOX_ID, identity, Buffer.from(JSON.stringify({ requestId: `vm-${process.pid}-${n++}`, ...m })));
  if (!r) throw new Error('no answer');
  return r;
};
const failed = (r: Record<string, unknown>): { code: string; detail: string } | undefined => (r.ok === false ? (r.error as { code: string; detail: string }) : undefined);

const identity = (await g.ipc<{ spki: string }>('vault', 'public-key', { name: 'identity' })).spki;
let refusal: { code: string; detail: string } | undefined;
try {
  if (a.stateOf(BOX_ID) === 'unknown') {
    const e = await cli('enroll');
    const cred = await ask({ type: 'enroll', ekCert: e.ekCert, akPublic: e.akPublic, pcr15: e.pcr15, ...(e.measurementLog ? { measurementLog: e.measurementLog } : {}) });
    refusal = failed(cred);
    if (!refusal) {
      const s = await cli(`activate --credential ${String(cred.credential)}`);
      refusal = failed(await ask({ type: 'activate', secret: s.secret }));
    }
  }
  if (!refusal) {
    const { nonce } = (await ask({ type: 'challenge' })) as { nonce: string };
    const q = await cli(`quote --nonce ${nonce}`);
    const gate = JSON.parse((await g.sh(`pksctl ipc vault gate-report '{"nonce":"${nonce}"}' --as uplink --compact`)).trim());
    refusal = failed(await ask({ type: 'quote', nonce, message: q.message, signature: q.signature, pcrs: q.pcrs, eventLog: q.eventLog, ...(q.measurementLog ? { measurementLog: q.measurementLog } : {}), gate }));
  }
} catch (err) {
  refusal = { code: asPksError(err).code, detail: String(err) };
}
let release = true;
try {
  a.mayRelease(BOX_ID);
} catch (err) {
  release = false;
  refusal ??= { code: asPksError(err).code, detail: asPksError(err).detail ?? '' };
}
process.stdout.write(JSON.stringify({ state: a.stateOf(BOX_ID), release, ...(refusal ? { code: refusal.code, reason: refusal.detail } : {}) }) + '\n');
