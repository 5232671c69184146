// The uplink test rig: a real broker, the reference KMS as a process, a real vault, the
// keystore stub, a registered box and an uplink in-process; plus a `side` MQTT client with the
// KMS's identity, so a test can publish commands directly and watch what the box sends.
import { generateKeyPairSync, randomBytes, type KeyPairKeyObjectResult } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { loadTrustAnchor } from '../../appliance/batch-format.js';
import { ipcClient, type IpcClient } from '../../appliance/ipc.js';
import { createLogger } from '../../appliance/log.js';
import { signCommand, type CommandName } from '../../appliance/contracts/commands.js';
import type { UplinkConfig } from '../../services/uplink/config.js';
import { boxTopic } from '../../appliance/contracts/topics.js';
import { Uplink } from '../../services/uplink/uplink.js';
import { startVault, type VaultHandle } from '../../scripts/plant/vault.js';
import { startBroker, type TestBroker } from '../helpers/broker.js';
import { startKms, type KmsOptions, type TestKms } from '../helpers/kms.js';
import { KeystoreStub } from './keystore-stub.js';

export const POOL = 'oemA.bcm.k4';

export interface Rig {
  dir: string;
  boxId: string;
  broker: TestBroker;
  kms: TestKms;
  vault: VaultHandle;
  stub: KeystoreStub;
  ksClient: IpcClient;
  uplink: Uplink;
  /** whether the uplink held or was making a broker connection right after start() */
  linkOpenAtStart: boolean;
  cfg: UplinkConfig;
  /** the box's setup identity (config files) */
  identity: { cert: string; key: string };
  side: MqttClient;
  /** messages the side client received, in order */
  got: Array<{ topic: string; payload: string }>;
  logs: string[];
  authKey: Buffer;
  ops: KeyPairKeyObjectResult;
  /** signs a command with the ops key (next seq) and publishes it to the box; returns the seq */
  command(name: CommandName, args?: Record<string, unknown>): Promise<number>;
  /** a fresh Uplink on the same config and state (the old one must be stopped) */
  newUplink(): Uplink;
  stop(): Promise<void>;
}

export async function startRig(o: {
  boxId?: string;
  schedule?: UplinkConfig['schedule'];
  timing?: Partial<UplinkConfig['timing']>;
  kms?: KmsOptions;
  name: string;
  /** issue 12: the vault's application gate config, and the uplink's attestation */
  vaultGate?: Record<string, unknown>;
  attest?: UplinkConfig['attest'];
}): Promise<Rig> {
  const boxId = o.boxId ?? 'box-1';
  const dir = await mkdtemp(path.join(os.tmpdir(), `pks-${o.name}-`));
  const logs: string[] = [];
  const got: Rig['got'] = [];
  const ops = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const authKey = randomBytes(16);
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async (): Promise<void> => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    if (process.env.PKS_KEEP_TEST_DIR) console.error('kept', dir);
    else await rm(dir, { recursive: true, force: true });
  };
  try {
    const broker = await startBroker();
    stops.push(() => broker.stop());
    const [kms, vault] = await Promise.all([
      startKms(broker, path.join(dir, 'kms'), o.kms),
      startVault({ dir: path.join(dir, 'vault'), runDir: path.join(dir, 'run'), logDir: dir, boxId, ...(o.vaultGate ? { gate: o.vaultGate } : {}) }),
    ]);
    stops.push(
      () => vault.stop(),
      () => kms.fleet.close(),
      () => kms.stop(),
    );
    const stub = new KeystoreStub(loadTrustAnchor(readFileSync(kms.caCert, 'utf8')), boxId);
    stub.vault = vault.client('keystore');
    const ksClient = ipcClient(await stub.start(path.join(dir, 'run', 'keystore')));
    stops.push(
      () => stub.stop(),
      () => ksClient.close(),
    );
    const vu = vault.client('uplink');
    const pk = async (name: string) => (await vu.call<{ spki: string }>('public-key', { name })).spki;
    await kms.fleet.call('register', { boxId, identity: await pk('identity'), transport: await pk('transport'), audit: await pk('audit') });
    const oem = path.join(dir, 'oem.json');
    await writeFile(oem, JSON.stringify({ v: 1, oem: 'oemA', pools: [{ pool: POOL, she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0 }, authKey: authKey.toString('hex'), generate: 2000 }] }));
    await kms.fleet.call('import-oem', { path: oem });

    const id = await broker.clientCert(boxId);
    const opsFile = path.join(dir, 'ops.pub');
    await writeFile(opsFile, ops.publicKey.export({ type: 'spki', format: 'pem' }));
    const cfg: UplinkConfig = {
      boxId,
      stateDir: path.join(dir, 'uplink'),
      mqtt: { host: '127.0.0.1', port: broker.port, caFile: broker.caCert, certFile: id.cert, keyFile: id.key, sessionExpirySeconds: 3600, keepaliveSeconds: 5, reconnectSeconds: 0.3 },
      opsPublicKeyFile: opsFile,
      kmsCaFile: kms.caCert,
      schedule: o.schedule ?? { mode: 'always', cron: '0 * * * *', windowSeconds: 60 },
      timing: { tickSeconds: 0.2, chunkTimeoutSeconds: 0.5, reorderRetrySeconds: 30, ackTimeoutSeconds: 1, statusSeconds: 1, certTimeoutSeconds: 5, ...o.timing },
      ...(o.attest ? { attest: o.attest } : {}),
    };
    const log = createLogger('uplink', { level: 'debug', write: (l) => logs.push(l) });
    const newUplink = (): Uplink => new Uplink({ cfg, keystore: ksClient, vault: vu, opsKey: ops.publicKey, mqttKey: readFileSync(id.key, 'utf8'), log, version: '0.1.0-test' });
    const rig: Rig = {
      dir,
      boxId,
      broker,
      kms,
      vault,
      stub,
      ksClient,
      uplink: newUplink(),
      linkOpenAtStart: false,
      cfg,
      identity: id,
      side: null as unknown as MqttClient,
      got,
      logs,
      authKey,
      ops,
      newUplink,
      async command(name, args = {}) {
        const seq = rig.uplink.state.state.lastSeq + 1 + Math.floor(Math.random() * 3);
        const cmd = signCommand({ v: 1, seq, expiresAt: new Date(Date.now() + 60_000).toISOString(), boxId, command: name, args }, ops.privateKey);
        await rig.side.publishAsync(boxTopic(boxId, 'cmd'), JSON.stringify(cmd), { qos: 1 });
        return seq;
      },
      stop,
    };
    stops.push(() => rig.uplink.stop());
    await rig.uplink.start();
    // read in the same turn as start(): the side client's TLS below may outlast a 1 s gap
    // between windows, so the test itself could not tell start() from the first window
    rig.linkOpenAtStart = rig.uplink.linkOpen;

    const sideId = await broker.clientCert('kms');
    const side = mqtt.connect({ protocol: 'mqtts', host: '127.0.0.1', port: broker.port, servername: 'localhost', ca: readFileSync(broker.caCert), key: readFileSync(sideId.key), cert: readFileSync(sideId.cert), protocolVersion: 5, clientId: `kms-test-side-${o.name}`, reconnectPeriod: 300 });
    side.on('message', (topic, p) => got.push({ topic, payload: p.toString() }));
    await new Promise<void>((r) => side.once('connect', () => r()));
    await side.subscribeAsync([boxTopic(boxId, 'cmd-result'), boxTopic(boxId, 'cert'), boxTopic(boxId, 'csr')], { qos: 1 });
    rig.side = side;
    stops.push(() => side.endAsync(true));
    return rig;
  } catch (err) {
    console.error(`${o.name}: rig setup failed:`, err);
    await stop();
    throw err;
  }
}
