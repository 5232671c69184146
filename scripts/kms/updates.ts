// The reference KMS's part in updates: it signs update manifests with its batch signer (the
// certificate the boxes pin the CA of travels along, services/updater/manifest.ts) and
// publishes them on the box's `update` topic, and it keeps each box's last `update-status`
// (progress or result) for pks-fleet's update view and rollouts (scripts/fleet/waves.ts).
import { randomUUID } from 'node:crypto';
import type { VerbTable } from '../../appliance/ipc.js';
import { NAME } from '../../appliance/schema.js';
import { COMPATIBLE } from '../../appliance/contracts/update.js';
import type { ManifestPayload, SignedManifest } from '../../appliance/contracts/update.js';
import type { BatchSigner } from './signer.js';

export function signManifestWith(p: ManifestPayload, signer: BatchSigner): SignedManifest {
  const text = JSON.stringify(p);
  return { v: 1, payload: text, sig: signer.sign(Buffer.from(text, 'utf8')).toString('base64'), cert: signer.certPem };
}

export interface UpdateVerbDeps {
  signer: BatchSigner;
  /** throws PKS_NOT_FOUND for an unknown box */
  box(boxId: string): unknown;
  publish(boxId: string, manifest: SignedManifest): Promise<void>;
}

export function kmsUpdateVerbs(d: UpdateVerbDeps): VerbTable {
  return {
    'send-update': {
      request: {
        type: 'object',
        additionalProperties: false,
        required: ['boxId', 'version', 'svn', 'size', 'sha256'],
        properties: {
          boxId: NAME,
          id: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._:-]{0,95}$' },
          compatible: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
          version: { type: 'string', pattern: '^[0-9]{1,6}\\.[0-9]{1,6}\\.[0-9]{1,6}$' },
          svn: { type: 'integer', minimum: 1, maximum: 999_999 },
          size: { type: 'integer', minimum: 1 },
          sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
          url: { type: 'string', maxLength: 1024 },
          chunkSize: { type: 'integer', minimum: 4096, maximum: 131_072 },
          install: { enum: ['window', 'now'] },
          ttlSeconds: { type: 'integer', minimum: 60, maximum: 30 * 86_400 },
        },
      },
      handler: async (r: { boxId: string; id?: string; compatible?: string; version: string; svn: number; size: number; sha256: string; url?: string; chunkSize?: number; install?: 'window' | 'now'; ttlSeconds?: number }) => {
        d.box(r.boxId);
        const now = Date.now();
        const m: ManifestPayload = {
          type: 'pks-update-manifest',
          v: 1,
          id: r.id ?? `up-${randomUUID()}`,
          boxId: r.boxId,
          compatible: r.compatible ?? COMPATIBLE,
          version: r.version,
          svn: r.svn,
          size: r.size,
          sha256: r.sha256,
          ...(r.url ? { url: r.url } : { chunks: { count: Math.ceil(r.size / (r.chunkSize ?? 131_072)), size: r.chunkSize ?? 131_072 } }),
          install: r.install ?? 'window',
          createdAt: new Date(now).toISOString(),
          expiresAt: new Date(now + (r.ttlSeconds ?? 7 * 86_400) * 1000).toISOString(),
        };
        await d.publish(r.boxId, signManifestWith(m, d.signer));
        return { boxId: r.boxId, id: m.id, sent: true };
      },
    },
  };
}
