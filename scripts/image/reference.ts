// The reference values the KMS checks a box's quotes against (issue 12, scripts/kms/attest.ts),
// signed by the image signing key at image build: the boot chain the build made (PCR 4: the UKI
// as loaded, PCR 7: Secure Boot state, PCR 11: the UKI's sections and systemd's boot phases as a
// running box has them). PCR 15 is not here: the KMS pins the value measured at the box's own
// setup, and the firmware PCRs 0-3, 5, 6 are checked by replaying the event log instead.
//   node --import tsx scripts/image/reference.ts --expected expected-pcrs.json --key KEY.pem > reference-values.json
import { readFileSync } from 'node:fs';
import { createPrivateKey, sign } from 'node:crypto';
import { parseArgs } from 'node:util';
import { referenceText } from '../kms/attest.js';

const { values } = parseArgs({ options: { expected: { type: 'string' }, key: { type: 'string' } }, strict: true });
if (!values.expected || !values.key) throw new Error('usage: reference.ts --expected FILE --key FILE');
type Chain = { pcrs: Record<string, string>; pcr11Phases: { ready: string } };
const e = JSON.parse(readFileSync(values.expected, 'utf8')) as Chain & { slots?: Record<string, Chain> };
// an A/B image: either slot's boot chain is the build's (the same application in both)
const chains: Chain[] = e.slots ? Object.values(e.slots) : [e];
const pcrs: Record<string, string[]> = {
  '4': [...new Set(chains.map((c) => c.pcrs['4']!))],
  '7': [e.pcrs['7']!],
  '11': [...new Set(chains.map((c) => c.pcr11Phases.ready))],
};
for (const [k, v] of Object.entries(pcrs)) if (v.some((x) => !/^[0-9a-f]{64}$/.test(x ?? ''))) throw new Error(`expected-pcrs: PCR ${k} missing`);
const sig = sign('sha256', Buffer.from(referenceText(pcrs)), createPrivateKey(readFileSync(values.key)));
process.stdout.write(JSON.stringify({ version: 1, bank: 'sha256', pcrs, sig: sig.toString('base64') }, null, 1) + '\n');
