// An in-process keystore on real parts (LMDB on disk, an in-process vault on its own SoftHSM
// token) whose clocks a test can step: the wall clock (Date.now) and the monotonic one
// (performance.now) separately, as an NTP step moves only the first. restart() closes and
// reopens the store as a process restart would.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadTrustAnchor, type TrustAnchor } from '../../appliance/batch-format.js';
import { silentLogger } from '../../appliance/log.js';
import { buildBatch, type SheKeySet } from '../../scripts/plant/batch.js';
import { makeKmsPki, type KmsPki } from '../../scripts/plant/keystore.js';
import { makeToken } from '../../scripts/plant/vault.js';
import { openDbs } from '../../services/keystore/db.js';
import { Keystore } from '../../services/keystore/keystore.js';
import type { QuotaPolicy } from '../../services/keystore/quota.js';
import { Vault } from '../../services/vault/vault.js';
import { inProcessVaultPort } from '../bench/floor.js';

export const BOX = 'box-rig-1';

export interface Rig {
  ks: Keystore;
  vault: Vault;
  kms: KmsPki;
  dir: string;
  /** wall clock offset and monotonic clock, both in ms, both steppable */
  clock: { wall: number; mono: number };
  batch(batchId: string, set: SheKeySet, chunkSize?: number): ReturnType<typeof buildBatch>;
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startRig(o: { ttlMs?: number; quotas?: QuotaPolicy; pools: string[] }): Promise<Rig> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'pks-rig-'));
  const token = await makeToken(path.join(dir, 'hsm'), 'pks-rig');
  const vault = new Vault({ module: token.module, tokenLabel: token.label, pin: token.pin, softhsm2Conf: token.conf }, BOX, silentLogger);
  vault.start();
  if (!vault.ready) throw new Error(`in-process vault not ready: ${JSON.stringify(vault.status())}`);
  const kms = await makeKmsPki(path.join(dir, 'kms'));
  const trust: TrustAnchor = loadTrustAnchor(await readFile(kms.caCert, 'utf8'));
  const clock = { wall: 0, mono: 0 };
  const open = async (): Promise<Keystore> => {
    const dbs = openDbs(path.join(dir, 'lmdb'), { mapSizeMb: 256 });
    const ks = new Keystore(
      dbs,
      inProcessVaultPort(vault),
      trust,
      BOX,
      {
        checkpointEvery: 1_000_000,
        checkpointMs: 3_600_000,
        reservationTtlMs: o.ttlMs ?? 3_600_000,
        now: () => Date.now() + clock.wall,
        hrtime: () => clock.mono,
        ...(o.quotas ? { quotas: o.quotas } : {}),
      },
      silentLogger,
    );
    for (const pool of o.pools) await ks.setPool({ pool, minimum: 1, reorder: 1, critical: 0 });
    return ks;
  };
  const rig: Rig = {
    ks: await open(),
    vault,
    kms,
    dir,
    clock,
    batch: (batchId, set, chunkSize) => buildBatch({ batchId, boxId: BOX, transportSpki: vault.publicKey('transport'), signer: kms.signer, set, ...(chunkSize ? { chunkSize } : {}) }),
    async restart() {
      await rig.ks.stop();
      rig.ks = await open();
    },
    async stop() {
      await rig.ks.stop();
      vault.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
  return rig;
}

/** The PksError code a promise rejects with ('no error' when it resolves). */
export async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
  return 'no error';
}
