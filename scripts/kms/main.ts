// pks-kms: the reference KMS for development, the plant-in-a-box and the tests.
//   node --import tsx scripts/kms/main.ts            (config from $PKS_CONFIG, see config.ts)
// Batch signing key (signer.ts): in the KMS's own PKCS#11 token (config signer.hsm, PIN from
// the credential `kms-hsm-pin` or signer.hsm.pinFile), or a PEM key file (signer.keyFile or the
// credential `kms-batch-signer-key`), with its certificate issued by the KMS CA the boxes pin.
// Box client certificates on rotate-cert: config clientCa (client-ca.ts).
// pks-fleet talks to it on <runDir>/fleet.sock.
import { mkdirSync, readFileSync } from 'node:fs';
import { loadConfig, readCredential } from '../../appliance/config.js';
import { runService } from '../../appliance/service.js';
import { ClientCa } from './client-ca.js';
import { kmsSchema, type KmsConfig } from './config.js';
import { Kms } from './kms.js';
import { Attestor, type ReferenceValues } from './attest.js';
import { loadSigner } from './signer.js';

await runService('kms', async (log) => {
  const cfg = loadConfig<KmsConfig>(kmsSchema) as KmsConfig;
  mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  const clientCa = cfg.clientCa ? ClientCa.load(cfg.clientCa) : null;
  const signer = await loadSigner(cfg.signer, log);
  log.info('batch signer ready', { kind: cfg.signer.hsm ? 'hsm' : 'key file' });
  let attest: Attestor | null = null;
  if (cfg.attest) {
    const a = cfg.attest;
    attest = new Attestor({
      ekCaPems: a.ekCaFiles.map((f) => readFileSync(f, 'utf8')),
      reference: JSON.parse(readFileSync(a.referenceFile, 'utf8')) as ReferenceValues,
      buildKeyPem: readFileSync(a.buildKeyFile, 'utf8'),
      windowMs: a.windowSeconds * 1000,
      nonceTtlMs: a.nonceSeconds * 1000,
      stateFile: a.stateFile ?? `${cfg.stateDir}.attestation.json`,
      ...(a.manifestsDir ? { manifestsDir: a.manifestsDir } : {}),
      ...(a.compatible ? { compatible: a.compatible } : {}),
    });
    const m = await attest.load();
    if (m.refused.length) log.warn('measurement manifests not signed by the build key: ignored', { files: m.refused.slice(0, 20) });
    log.info('attestation required for stock', { windowSeconds: a.windowSeconds, manifests: m.manifests });
  }
  const kms = new Kms({ cfg, signer, clientCa, mqttKey: readCredential('kms-mqtt-key', cfg.mqtt.keyFile), log, attest });
  await kms.start();
  return {
    status: () => (kms.connected ? 'serving, broker connected' : 'serving, broker not connected'),
    async stop() {
      await kms.stop();
      signer.close?.();
    },
  };
});
