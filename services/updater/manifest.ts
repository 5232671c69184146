// Update manifests (KMS -> box, MQTT `pks/v1/box/<boxCN>/update`, relayed to the updater by the
// uplink). Central ops announce a bundle; the KMS signs the announcement with its signer, whose
// certificate (issued by the KMS CA pinned on the box) travels with it, like a batch chunk:
//   { "v": 1, "payload": "<JSON text>", "sig": "<base64 DER ECDSA-P256-SHA256 over payload>",
//     "cert": "<PEM of the KMS signer>" }
// Payload:
//   { "type": "pks-update-manifest", "v": 1, "id", "boxId": "<box CN>", "compatible", "version",
//     "svn", "size", "sha256", "url"?: "http(s)://<plant network>/...", "chunks"?: {count, size},
//     "install": "window" | "now", "createdAt", "expiresAt" }
// The bundle itself is still checked by RAUC against the maintenance keyring: the manifest only
// says what to fetch and proves it came from our KMS, so a broker cannot make a box download
// (or report about) anything else.
import { X509Certificate, createPublicKey, createSign, createVerify, type KeyObject } from 'node:crypto';
import { compileChecker } from '../../appliance/config.js';
import { pksError } from '../../appliance/errors.js';
import { parseJsonOr } from '../../appliance/json.js';
import { ID, NAME, b64 } from '../../appliance/schema.js';
import type { ManifestPayload, SignedManifest } from '../../appliance/contracts/update.js';

export const MAX_MANIFEST_BYTES = 16 * 1024;
// base64 of a chunk plus its JSON must fit the broker's 256 KiB packet limit (scripts/broker.sh)
export const MAX_CHUNK_BYTES = 128 * 1024;

const envelope = compileChecker<SignedManifest>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['v', 'payload', 'sig', 'cert'],
    properties: { v: { const: 1 }, payload: { type: 'string', maxLength: MAX_MANIFEST_BYTES }, sig: b64(80), cert: { type: 'string', maxLength: 8192 } },
  },
  'update manifest',
  'PKS_UPDATE_MANIFEST',
);

const payload = compileChecker<ManifestPayload>(
  {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'v', 'id', 'boxId', 'compatible', 'version', 'svn', 'size', 'sha256', 'install', 'createdAt', 'expiresAt'],
    properties: {
      type: { const: 'pks-update-manifest' },
      v: { const: 1 },
      id: ID,
      boxId: NAME,
      compatible: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]{0,63}$' },
      version: { type: 'string', pattern: '^[0-9]{1,6}\\.[0-9]{1,6}\\.[0-9]{1,6}$' },
      svn: { type: 'integer', minimum: 1, maximum: 999_999 },
      size: { type: 'integer', minimum: 1, maximum: 8 * 2 ** 30 },
      sha256: { type: 'string', pattern: '^[0-9a-f]{64}$' },
      url: { type: 'string', maxLength: 1024, pattern: '^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/%-]*$' },
      chunks: {
        type: 'object',
        additionalProperties: false,
        required: ['count', 'size'],
        properties: { count: { type: 'integer', minimum: 1, maximum: 1_000_000 }, size: { type: 'integer', minimum: 4096, maximum: MAX_CHUNK_BYTES } },
      },
      install: { enum: ['window', 'now'] },
      createdAt: { type: 'string', format: 'date-time' },
      expiresAt: { type: 'string', format: 'date-time' },
    },
  },
  'update manifest payload',
  'PKS_UPDATE_MANIFEST',
);

/** KMS side (reference KMS, pks-fleet tests). */
export function signManifest(p: ManifestPayload, key: KeyObject | string, certPem: string): SignedManifest {
  const text = JSON.stringify(p);
  return { v: 1, payload: text, sig: createSign('sha256').update(text).sign(key).toString('base64'), cert: certPem };
}

/** Box side: shape, signer issued by the pinned KMS CA and valid now, signature, payload, addressee, expiry. */
export function verifyManifest(raw: Buffer | string, o: { kmsCa: X509Certificate; boxId: string; compatible: string; maxBytes: number; now?: Date }): ManifestPayload {
  const env = envelope(parseJsonOr('PKS_UPDATE_MANIFEST', 'manifest', raw, MAX_MANIFEST_BYTES * 2));
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(env.cert);
  } catch {
    throw pksError('PKS_UPDATE_MANIFEST', 'signer certificate is not a certificate');
  }
  const now = o.now ?? new Date();
  if (!cert.checkIssued(o.kmsCa) || !cert.verify(o.kmsCa.publicKey)) throw pksError('PKS_UPDATE_MANIFEST', 'signer is not issued by the pinned KMS CA');
  if (now < new Date(cert.validFrom) || now > new Date(cert.validTo)) throw pksError('PKS_UPDATE_MANIFEST', 'signer certificate is not valid now');
  let ok = false;
  try {
    ok = createVerify('sha256').update(env.payload).verify(createPublicKey(cert.publicKey.export({ type: 'spki', format: 'pem' })), Buffer.from(env.sig, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) throw pksError('PKS_UPDATE_MANIFEST', 'signature does not verify');
  const m = payload(parseJsonOr('PKS_UPDATE_MANIFEST', 'payload', env.payload));
  if (m.boxId !== o.boxId) throw pksError('PKS_UPDATE_MANIFEST', `manifest is for ${m.boxId}`);
  if (m.compatible !== o.compatible) throw pksError('PKS_UPDATE_INCOMPATIBLE', `manifest is for '${m.compatible}'`);
  if (!(Date.parse(m.expiresAt) > now.getTime())) throw pksError('PKS_UPDATE_MANIFEST', 'manifest has expired');
  if (m.size > o.maxBytes) throw pksError('PKS_UPDATE_MANIFEST', `bundle of ${m.size} bytes is over the limit`);
  if (!m.url === !m.chunks) throw pksError('PKS_UPDATE_MANIFEST', 'manifest needs exactly one of url and chunks');
  if (m.chunks && m.chunks.count !== Math.ceil(m.size / m.chunks.size)) throw pksError('PKS_UPDATE_MANIFEST', 'chunk count does not fit the size');
  return m;
}
