// What the reference KMS's Attestor is given, for tests with a swtpm box (issue 12): the EK CA
// of the TPM's "vendor" and the image's reference PCR 4 and 7 (from the firmware event log the
// box replays) signed by a build key. Returns the `attest` part of the KMS options.
import { generateKeyPairSync, sign } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseEventLog, replayEventLog } from '../../services/attest/eventlog.js';
import { referenceText } from '../../scripts/kms/attest.js';

export async function writeKmsAttestFiles(dir: string, eventLog: Buffer, ekCaPems: readonly string[], windowSeconds: number): Promise<{ ekCaFiles: string[]; referenceFile: string; buildKeyFile: string; windowSeconds: number }> {
  const build = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
  const fw = replayEventLog(parseEventLog(eventLog));
  const pcrs = { '4': [fw.get(4)!.toString('hex')], '7': [fw.get(7)!.toString('hex')] };
  await mkdir(dir, { recursive: true });
  const referenceFile = path.join(dir, 'reference.json');
  const buildKeyFile = path.join(dir, 'build.pem');
  await writeFile(referenceFile, JSON.stringify({ version: 1, bank: 'sha256', pcrs, sig: sign('sha256', Buffer.from(referenceText(pcrs)), build.privateKey).toString('base64') }));
  await writeFile(buildKeyFile, build.publicKey);
  const ekCaFiles = await Promise.all(ekCaPems.map(async (pem, i) => {
    const f = path.join(dir, `ek-ca-${i}.pem`);
    await writeFile(f, pem);
    return f;
  }));
  return { ekCaFiles, referenceFile, buildKeyFile, windowSeconds };
}
