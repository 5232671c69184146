// The enrolment step of `pksctl setup` (issue 16): the box's key hierarchy in the HSM (the
// vault's own Hsm.ensureHierarchy: identity, transport, audit, storage, ECU CA), a fresh MQTT key
// and its CSR (the uplink's rotate-cert code), the CSR endorsed by the HSM identity key (the
// vault's own boxCsrToSign), then the KMS: it pins the box's public keys and signs the CSR with
// the broker's client CA. What comes back is checked like a rotate-cert answer (chains to the
// broker CA we were given, names this box, carries our key), and the MQTT credentials are proven
// by a TLS connection to the broker. The MQTT key and CSR are kept (durably) before the KMS is
// asked, so a cut run asks again for the same key; the KMS answers the same keys with created:false.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import * as x509 from '@peculiar/x509';
import mqtt from 'mqtt';
import { writeFileDurably } from '../durable-file.js';
import { asPksError, pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { Hsm } from '../../services/vault/hsm.js';
import { boxCsrToSign } from '../../services/vault/signed-structures.js';
import { checkIssuedCert, makeCsr } from '../../services/uplink/identity.js';
import type { SetupAnswers } from './setup-answers.js';

export interface EnrolFiles {
  /** the MQTT client key, sealed to the TPM like the PINs (0600); pks-unseal opens it at boot */
  key: string;
  csr: string;
  cert: string;
  brokerCa: string;
  kmsCa: string;
}

export const enrolFiles = (root: string): EnrolFiles => ({
  key: path.join(root, 'etc/pks/credentials/mqtt-key.sealed'),
  csr: path.join(root, 'var/lib/pks/setup/mqtt-client.csr'),
  cert: path.join(root, 'etc/pks/uplink/mqtt-client.crt'),
  brokerCa: path.join(root, 'etc/pks/uplink/mqtt-ca.crt'),
  kmsCa: path.join(root, 'etc/pks/kms-ca.crt'),
});

/** The box's HSM public keys, made when missing (as the vault does at its first start). */
function hsmKeys(a: SetupAnswers, pin: Buffer): { hsm: Hsm; created: string[]; spki: Record<'identity' | 'transport' | 'audit', string> } {
  const hsm = Hsm.open({ module: a.hsm.module, tokenLabel: a.hsm.tokenLabel, pin: pin.toString('latin1'), ...(a.hsm.softhsm2Conf ? { softhsm2Conf: a.hsm.softhsm2Conf } : {}) });
  try {
    const { created } = hsm.ensureHierarchy();
    const b64 = (n: 'identity' | 'transport' | 'audit'): string => hsm.publicKey(n).toString('base64');
    return { hsm, created, spki: { identity: b64('identity'), transport: b64('transport'), audit: b64('audit') } };
  } catch (e) {
    hsm.close();
    throw e;
  }
}

/** Seals a secret to the TPM / opens a sealed file (setup-steps.ts): a private key never lands in clear. */
export interface Sealer {
  seal(secret: Buffer): Promise<string>;
  unseal(file: string): Promise<Buffer>;
}

async function proveMqtt(a: SetupAnswers, f: EnrolFiles, key: Buffer): Promise<void> {
  const k = a.kms;
  const client = mqtt.connect({
    protocol: 'mqtts',
    host: k.broker.host,
    port: k.broker.port,
    ca: readFileSync(f.brokerCa),
    cert: readFileSync(f.cert),
    key,
    clientId: `${a.box}-setup`,
    protocolVersion: 5,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    clean: true,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      client.once('connect', () => resolve());
      client.once('error', reject);
      client.once('close', () => reject(new Error('closed by the broker')));
    });
  } catch (e) {
    throw pksError('PKS_SETUP_STEP', `the broker ${k.broker.host}:${k.broker.port} refused the new MQTT credentials: ${String((e as Error).message).slice(0, 200)}`);
  } finally {
    await client.endAsync(true).catch(() => undefined);
  }
}

export async function enrol(a: SetupAnswers, root: string, pin: Buffer, sealer: Sealer): Promise<Record<string, unknown>> {
  const f = enrolFiles(root);
  const k = a.kms;
  for (const d of [f.key, f.csr, f.cert]) mkdirSync(path.dirname(d), { recursive: true, mode: d === f.key ? 0o700 : 0o755 });
  // the pinned CAs first: what plant IT brought, copied as read
  writeFileDurably(f.kmsCa, readFileSync(k.caFile), 0o644);
  writeFileDurably(f.brokerCa, readFileSync(k.broker.caFile), 0o644);
  if (!existsSync(f.key) || !existsSync(f.csr)) {
    const fresh = await makeCsr(a.box);
    writeFileDurably(f.key, await sealer.seal(Buffer.from(fresh.keyPem)), 0o600);
    writeFileDurably(f.csr, fresh.csrPem, 0o644);
  }
  const csr = readFileSync(f.csr, 'utf8');
  const keys = hsmKeys(a, pin);
  let answer: { created: boolean; cert: string; serial: string; notAfter: string };
  try {
    const endorsement = keys.hsm.sign('identity', await boxCsrToSign(csr, a.box)).toString('base64');
    const kms = ipcClient(k.enrolSocket, { timeoutMs: 30_000, connections: 1 });
    try {
      answer = await kms.call('enrol', { boxId: a.box, ...keys.spki, csr, endorsement });
    } catch (e) {
      const p = asPksError(e);
      if (p.code === 'PKS_IPC_UNAVAILABLE') throw pksError('PKS_SETUP_STEP', `the KMS is not reachable at ${k.enrolSocket}`);
      throw pksError(p.code, `the KMS refused the enrolment: ${p.detail}`);
    } finally {
      await kms.close();
    }
  } finally {
    keys.hsm.close();
  }
  const issued = checkIssuedCert(answer.cert, { caPem: readFileSync(f.brokerCa, 'utf8'), boxId: a.box, spki: await csrSpki(csr) });
  writeFileDurably(f.cert, answer.cert, 0o644);
  const key = await sealer.unseal(f.key);
  try {
    await proveMqtt(a, f, key);
  } finally {
    key.fill(0);
  }
  return {
    keysCreated: keys.created.length ? keys.created : 'none (kept)',
    kmsPinned: answer.created ? 'now' : 'already',
    mqttCert: `serial ${issued.serial} until ${issued.notAfter}`,
    files: ['/etc/pks/kms-ca.crt', '/etc/pks/uplink/mqtt-ca.crt', '/etc/pks/uplink/mqtt-client.crt', '/etc/pks/credentials/mqtt-key.sealed'],
    broker: `${k.broker.host}:${k.broker.port} accepted the credentials`,
  };
}

async function csrSpki(csrPem: string): Promise<Buffer> {
  return Buffer.from(new x509.Pkcs10CertificateRequest(csrPem).publicKey.rawData);
}
