// One appliance on this machine: vault (fresh SoftHSM token) and keystore as processes, the
// KMS PKI the keystore pins, and a way to feed it batches as the KMS would.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { SignedChunk } from '../../appliance/batch-format.js';
import type { ImportChunkResponse } from '../../appliance/contracts/keystore.js';
import { buildBatch, type SheKeySet } from './batch.js';
import { makeKmsPki, startKeystore, type KeystoreHandle, type KmsPki, type PoolConfig } from './keystore.js';
import { startVault, type VaultHandle } from './vault.js';

/** Keystore quotas for load tests and benchmarks, far above a plant line's (quota.ts). */
export const LOAD_QUOTAS = Object.freeze({ openPerTester: 10_000, testerPerHour: 1_000_000, poolPerHour: 10_000_000 });

export interface Box {
  base: string;
  runDir: string;
  logDir: string;
  boxId: string;
  vault: VaultHandle;
  keystore: KeystoreHandle;
  kms: KmsPki;
  transportSpki: Buffer;
  batch(batchId: string, set: SheKeySet, chunkSize?: number): SignedChunk[];
  importChunks(chunks: SignedChunk[]): Promise<ImportChunkResponse[]>;
  /** registers testers as `pksctl tester add` does (station `st-<cn>`, a grant into 2099): reserve and confirm check it */
  registerTesters(cns: readonly string[], pools: readonly string[]): Promise<void>;
  stop(): Promise<void>;
}

/**
 * `kmsCa`: pin this KMS CA (the reference KMS's) instead of making a throw-away KMS PKI; then
 * `kms.signer` is not usable and batches come from the KMS itself.
 */
export async function startBox(o: { boxId?: string; pools: PoolConfig[]; base?: string; checkpointEvery?: number; kmsCa?: string; ecuCa?: Parameters<typeof startVault>[0]['ecuCa']; quotas?: Record<string, number>; gate?: Parameters<typeof startVault>[0]['gate']; keystoreExtra?: Record<string, unknown> }): Promise<Box> {
  const base = o.base ?? (await mkdtemp(path.join(os.tmpdir(), 'pks-box-')));
  const ownBase = !o.base;
  const runDir = path.join(base, 'run');
  const logDir = path.join(base, 'logs');
  await mkdir(logDir, { recursive: true });
  const boxId = o.boxId ?? 'box-test-1';
  const kms: KmsPki = o.kmsCa ? { caCert: o.kmsCa, signer: null as unknown as KmsPki['signer'] } : await makeKmsPki(path.join(base, 'kms-pki'));
  const vault = await startVault({ dir: path.join(base, 'vault'), runDir, logDir, boxId, ...(o.ecuCa ? { ecuCa: o.ecuCa } : {}), ...(o.gate ? { gate: o.gate } : {}) });
  const keystore = await startKeystore({ dir: path.join(base, 'keystore'), runDir, logDir, boxId, kmsCa: kms.caCert, pools: o.pools, ...(o.checkpointEvery ? { checkpointEvery: o.checkpointEvery } : {}), ...(o.quotas ? { quotas: o.quotas } : {}), ...(o.keystoreExtra ? { extra: o.keystoreExtra } : {}) });
  const admin = vault.client('pksctl');
  const transportSpki = Buffer.from((await admin.call<{ spki: string }>('public-key', { name: 'transport' })).spki, 'base64');
  const importer = keystore.client('pksctl');
  return {
    base,
    runDir,
    logDir,
    boxId,
    vault,
    keystore,
    kms,
    transportSpki,
    batch: (batchId, set, chunkSize) => buildBatch({ batchId, boxId, transportSpki, signer: kms.signer, set, ...(chunkSize ? { chunkSize } : {}) }),
    async importChunks(chunks) {
      const out: ImportChunkResponse[] = [];
      for (const chunk of chunks) out.push(await importer.call<ImportChunkResponse>('import-chunk', { chunk }));
      return out;
    },
    async registerTesters(cns, pools) {
      for (const cn of cns) await importer.call('tester-put', { cn, station: `st-${cn}`, pools: [...pools], expiresAt: '2099-01-01T00:00:00.000Z', revoked: false });
    },
    async stop() {
      await keystore.stop();
      await vault.stop();
      if (ownBase && !process.env.PKS_KEEP_TMP) await rm(base, { recursive: true, force: true });
    },
  };
}
