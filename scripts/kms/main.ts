// pks-kms: the reference KMS for development, the plant-in-a-box and the tests.
//   node --import tsx scripts/kms/main.ts            (config from $PKS_CONFIG, see config.ts)
// Batch signing key: a PEM key file (config signer.keyFile or the credential
// `kms-batch-signer-key`) with its certificate issued by the KMS CA the boxes pin.
// pks-fleet talks to it on <runDir>/fleet.sock.
import { mkdirSync } from 'node:fs';
import { loadConfig, readCredential } from '../../appliance/config.js';
import { runService } from '../../appliance/service.js';
import { kmsSchema, loadSigner, type KmsConfig } from './config.js';
import { Kms } from './kms.js';

await runService('kms', async (log) => {
  const cfg = loadConfig<KmsConfig>(kmsSchema) as KmsConfig;
  mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
  const kms = new Kms({ cfg, signer: loadSigner(cfg.signer), mqttKey: readCredential('kms-mqtt-key', cfg.mqtt.keyFile), log });
  await kms.start();
  return {
    status: () => (kms.connected ? 'serving, broker connected' : 'serving, broker not connected'),
    stop: () => kms.stop(),
  };
});
