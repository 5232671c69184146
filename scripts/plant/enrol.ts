// Joining a box to the reference KMS, as the plant-in-a-box and the campaign do it: register
// the box's public keys with the KMS, and write the uplink's config (MQTT v5 with the box's
// client certificate, always connected, an ops key pair for signed commands).
import { generateKeyPairSync } from 'node:crypto';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Box } from './box.js';
import type { TestBroker } from './broker.js';
import type { TestKms } from './kms.js';

export async function registerBox(kms: TestKms, box: Box): Promise<void> {
  const vu = box.vault.client('uplink');
  const pk = async (name: string): Promise<string> => (await vu.call<{ spki: string }>('public-key', { name })).spki;
  await kms.fleet.call('register', { boxId: box.boxId, identity: await pk('identity'), transport: await pk('transport'), audit: await pk('audit') });
}

/**
 * Writes DIR/uplink.json (state in DIR/state, ops key pair in DIR/ops.{pub,key}, its own copies of
 * the MQTT credentials: under its own user the uplink reads nothing of the broker's directory);
 * returns its path. `ipcGroups`: the pair groups of its status sockets (scripts/plant/users.ts).
 */
export async function writeUplinkConfig(o: { dir: string; boxId: string; broker: TestBroker; kmsCaFile: string; timing: Record<string, number>; ipcGroups?: Record<string, number> }): Promise<string> {
  await mkdir(o.dir, { recursive: true });
  const issued = await o.broker.clientCert(o.boxId);
  const id = { cert: path.join(o.dir, 'mqtt-client.crt'), key: path.join(o.dir, 'mqtt-client.key'), ca: path.join(o.dir, 'mqtt-ca.crt') };
  await copyFile(issued.cert, id.cert);
  await copyFile(issued.key, id.key);
  await copyFile(o.broker.caCert, id.ca);
  const ops = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const opsPub = path.join(o.dir, 'ops.pub');
  await writeFile(opsPub, ops.publicKey.export({ type: 'spki', format: 'pem' }));
  await writeFile(path.join(o.dir, 'ops.key'), ops.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const file = path.join(o.dir, 'uplink.json');
  await writeFile(
    file,
    JSON.stringify({
      boxId: o.boxId,
      stateDir: path.join(o.dir, 'state'),
      mqtt: { host: '127.0.0.1', port: o.broker.port, caFile: id.ca, certFile: id.cert, keyFile: id.key, sessionExpirySeconds: 86_400, keepaliveSeconds: 5, reconnectSeconds: 0.5 },
      opsPublicKeyFile: opsPub,
      kmsCaFile: o.kmsCaFile,
      schedule: { mode: 'always', cron: '0 * * * *', windowSeconds: 60 },
      timing: o.timing,
      ...(o.ipcGroups ? { ipc: { groups: o.ipcGroups } } : {}),
    }),
  );
  return file;
}
