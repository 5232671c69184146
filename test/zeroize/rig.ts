// A box for the decommissioning tests: real mosquitto (TLS, client certificates, the CRL it
// reloads), the reference KMS writing that CRL, vault on SoftHSM, keystore on LMDB, uplink.
import { X509Certificate } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import mqtt from 'mqtt';
import type { StatsResponse } from '../../appliance/contracts/keystore.js';
import { signCommand, type CommandName } from '../../appliance/contracts/commands.js';
import { startBox, type Box } from '../../scripts/plant/box.js';
import { startBroker, type TestBroker } from '../../scripts/plant/broker.js';
import { UPLINK_TIMING } from '../../scripts/plant/cluster.js';
import { registerBox, writeUplinkConfig } from '../../scripts/plant/enrol.js';
import { startKms, type TestKms } from '../../scripts/plant/kms.js';
import { ROOT, startService, waitFor, type Proc } from '../../scripts/plant/process.js';
import { ensureServiceUsers, pairGroups, prepareServiceUser, separateUsers } from '../../scripts/plant/users.js';

const run = promisify(execFile);
export const POOL = 'oem1.bcm.key4';

export interface Rig {
  base: string;
  broker: TestBroker;
  kms: TestKms;
  box: Box;
  uplink: Proc;
  upDir: string;
  mqttCert: string;
  mqttKey: string;
  command(command: CommandName, args?: Record<string, unknown>): Promise<number>;
  stop(): Promise<void>;
}

export async function startRig(boxId: string): Promise<Rig> {
  const base = await mkdtemp(path.join(os.tmpdir(), 'pks-zeroize-'));
  const broker = await startBroker();
  const kms = await startKms(broker, path.join(base, 'kms'), { signer: 'keyfile', crl: true });
  const oem = path.join(base, 'oem.json');
  await writeFile(oem, JSON.stringify({ v: 1, oem: 'oem1', pools: [{ pool: POOL, she: { keyId: 4, authKeyId: 1, counter: 1, flags: 0 }, authKey: '00'.repeat(16), generate: 500 }] }));
  await kms.fleet.call('import-oem', { path: oem });
  const box = await startBox({ base: path.join(base, 'box'), boxId, pools: [{ pool: POOL, minimum: 5, reorder: 20 }], checkpointEvery: 5, kmsCa: kms.caCert });
  await registerBox(kms, box);
  const separate = separateUsers() && ensureServiceUsers();
  const upDir = path.join(base, 'box', 'uplink');
  const cfg = await writeUplinkConfig({ dir: upDir, boxId, broker, kmsCaFile: kms.caCert, timing: UPLINK_TIMING, ...(separate ? { ipcGroups: pairGroups('uplink', ['sentinel', 'updater']) } : {}) });
  const user = prepareServiceUser('uplink', { separate, own: [upDir], runDir: box.runDir, reach: [path.dirname(kms.caCert)] });
  const uplink = startService('uplink', { PKS_CONFIG: cfg, PKS_RUN_DIR: box.runDir }, box.logDir, 'uplink', user);
  await waitFor('first stock', async () => ((await box.keystore.client('pksctl').call<StatsResponse>('stats')).pools[POOL]?.available ?? 0) >= 20, 60_000, 200);
  const issued = await broker.clientCert(boxId);
  let seq = Date.now();
  return {
    base,
    broker,
    kms,
    box,
    uplink,
    upDir,
    mqttCert: readFileSync(issued.cert, 'utf8'),
    mqttKey: readFileSync(issued.key, 'utf8'),
    async command(command, args = {}) {
      const s = ++seq;
      const signed = signCommand({ v: 1, seq: s, expiresAt: new Date(Date.now() + 60_000).toISOString(), boxId, command, args }, readFileSync(path.join(upDir, 'ops.key'), 'utf8'));
      await kms.fleet.call('send-command', { boxId, command: signed });
      return s;
    },
    async stop() {
      await uplink.stop().catch(() => undefined);
      await box.stop().catch(() => undefined);
      await kms.stop().catch(() => undefined);
      await broker.stop().catch(() => undefined);
      if (!process.env.PKS_KEEP_TMP) await rm(base, { recursive: true, force: true });
    },
  };
}

export const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber.toLowerCase();

/** Whether mosquitto takes an MQTT v5 connection with this client certificate now. */
export async function brokerTakes(broker: TestBroker, cert: string, key: string): Promise<boolean> {
  const client = mqtt.connect({ host: '127.0.0.1', port: broker.port, protocol: 'mqtts', protocolVersion: 5, ca: readFileSync(broker.caCert), cert, key, reconnectPeriod: 0, connectTimeout: 5000, clientId: `probe-${Math.random().toString(16).slice(2)}` });
  try {
    return await new Promise<boolean>((resolve) => {
      client.once('connect', () => resolve(true));
      client.once('error', () => resolve(false));
      client.once('close', () => resolve(false));
    });
  } finally {
    client.end(true);
  }
}

/** Key objects (private, public, secret) on the box's SoftHSM token, read with pkcs11-tool. */
export async function tokenObjects(box: Box): Promise<{ keys: number; data: number }> {
  const t = box.vault.token;
  const { stdout } = await run('pkcs11-tool', ['--module', t.module, '--token-label', t.label, '--login', '--pin', t.pin, '--list-objects'], { env: { ...process.env, SOFTHSM2_CONF: t.conf }, timeout: 30_000 });
  return { keys: (stdout.match(/^(Private Key|Public Key|Secret Key) Object/gm) ?? []).length, data: (stdout.match(/^Data object/gm) ?? []).length };
}

export async function pksctl(box: Box, args: string[], input?: string): Promise<{ code: number; out: string; err: string }> {
  return await new Promise((resolve) => {
    const child = execFile(process.execPath, [path.join(ROOT, 'bin', 'pksctl.mjs'), ...args], { env: { ...process.env, PKS_RUN_DIR: box.runDir }, timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout, err: stderr });
    });
    child.stdin?.end(input ?? '');
  });
}
