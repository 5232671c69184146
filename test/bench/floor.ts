// The raw floor: the same issuance with no HTTP and no processes in between. The keystore
// (durable LMDB reserve and confirm, audit and outbox included) runs in this process with a
// VaultPort that calls an in-process Vault on its own SoftHSM token; between reserve and
// confirm the ECU's answer comes precomputed (ecu-answers.ts), as on the HTTP path.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { loadTrustAnchor } from '../../appliance/batch-format.js';
import { silentLogger } from '../../appliance/log.js';
import { readFile } from 'node:fs/promises';
import { buildBatch, type SheKeySet } from '../../scripts/plant/batch.js';
import { EcuAnswers } from './ecu-answers.js';
import { makeKmsPki } from '../../scripts/plant/keystore.js';
import { makeToken } from '../../scripts/plant/vault.js';
import { LOAD_QUOTAS } from '../../scripts/plant/box.js';
import { openDbs } from '../../services/keystore/db.js';
import { Keystore, type SheCall, type VaultPort } from '../../services/keystore/keystore.js';
import { Vault, type SheRequest } from '../../services/vault/vault.js';

const toShe = (c: SheCall): SheRequest => ({
  batchId: c.batchId,
  pool: c.pool,
  recordId: c.recordId,
  batchKey: Buffer.from(c.batchKey, 'base64'),
  record: Buffer.from(c.record, 'base64'),
  auth: Buffer.from(c.auth, 'base64'),
  uid: Buffer.from(c.uid, 'hex'),
  keyId: c.keyId,
  authKeyId: c.authKeyId,
  counter: c.counter,
  flags: c.flags,
});

export function inProcessVaultPort(vault: Vault): VaultPort {
  return {
    openBatch: async (batchId, epk) => vault.openBatch(Buffer.from(epk, 'base64'), batchId),
    async shePrepare(req) {
      const m = vault.shePrepare(toShe(req));
      return { m1: m.m1.toString('hex'), m2: m.m2.toString('hex'), m3: m.m3.toString('hex') };
    },
    sheVerify: async (req) => vault.sheVerify(toShe(req), Buffer.from(req.m4, 'hex'), Buffer.from(req.m5, 'hex')),
    signCheckpoint: async (c) => vault.signCheckpoint(c),
    signVerificationFile: async (t) => vault.signVerificationFile(t),
    issueEcuCert: (r) => vault.issueEcuCertificate({ ...r, spki: Buffer.from(r.spki, 'base64') }),
  };
}

export interface Floor {
  /** one full injection: reserve, ECU load, confirm */
  inject(tester: string, uid: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startFloor(o: { dir: string; boxId: string; pool: string; master: Buffer; keys: SheKeySet['keys'] }): Promise<Floor> {
  await mkdir(o.dir, { recursive: true });
  const token = await makeToken(path.join(o.dir, 'hsm'), 'pks-floor');
  const vault = new Vault({ module: token.module, tokenLabel: token.label, pin: token.pin, softhsm2Conf: token.conf }, o.boxId, silentLogger);
  vault.start();
  if (!vault.ready) throw new Error(`in-process vault not ready: ${JSON.stringify(vault.status())}`);
  const kms = await makeKmsPki(path.join(o.dir, 'kms'));
  const dbs = openDbs(path.join(o.dir, 'lmdb'), { mapSizeMb: 4096 });
  const ks = new Keystore(dbs, inProcessVaultPort(vault), loadTrustAnchor(await readFile(kms.caCert, 'utf8')), o.boxId, { checkpointEvery: 1000, checkpointMs: 5000, reservationTtlMs: 86_400_000, quotas: LOAD_QUOTAS }, silentLogger);
  await ks.setPool({ pool: o.pool, minimum: 1, reorder: 1, critical: 0 });
  ks.start();
  const chunks = buildBatch({
    batchId: 'floor-batch',
    boxId: o.boxId,
    transportSpki: vault.publicKey('transport'),
    signer: kms.signer,
    set: { pool: o.pool, keyId: 4, authKeyId: 1, counter: 1, flags: 0, authKey: o.master, keys: o.keys },
  });
  for (const c of chunks) await ks.importer.importChunk(c);
  const answers = new EcuAnswers({ keyId: 4, authKeyId: 1, counter: 1 }).add(o.keys);
  return {
    async inject(tester, uid) {
      const p = await ks.reserve({ pool: o.pool, uid, tester, station: `st-${tester}` });
      const proof = answers.proof(p.packageId, uid);
      const c = await ks.confirm(p.packageId, tester, proof.m4, proof.m5);
      if (!c.verified) throw new Error('proof did not verify');
    },
    async stop() {
      await ks.stop();
      vault.stop();
    },
  };
}
