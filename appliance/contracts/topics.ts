// The MQTT topic tree between a box and the central KMS (v1). Everything of one box lives under
// `pks/v1/box/<boxCN>/`, where <boxCN> is the CN of the box's client certificate (the broker
// maps it to the MQTT username and its ACL lets a box publish only on its outbound topics and
// read only its inbound ones, scripts/broker.sh; the KMS may use all of `pks/v1/#`, ops may
// only read `status`). The box id used in batches and commands is
// that same CN (e.g. `box-17`).
//
//   topic        direction   QoS  retained  payload
//   batch        KMS → box    1    no        one signed key-batch chunk (appliance/batch-format.ts)
//   reorder      box → KMS    1    no        {requestId, pool, count}: "send me `count` keys for
//                                           `pool`"; the KMS answers once per requestId (a repeat
//                                           re-publishes the same batch, never a second one)
//   resend       box → KMS    1    no        {batchId, chunks:[i,...]}: chunks the box still misses
//   verify       box → KMS    1    no        a signed verification file (verification.ts)
//   ack          KMS → box    1    no        KMS-signed (appliance/kms-message.ts) {fileId, ids:[outbox
//                                           ids], rejected?, error?}: application-level acknowledgement;
//                                           the box deletes only ids it sent in that file
//   cmd          KMS → box    1    no        a signed ops command (commands.ts), relayed by the KMS
//   cmd-result   box → KMS    1    no        {ref, seq?, command?, ok, result?|error{code,detail}, at}
//   status       box → all    1    yes       the box's status document (status.ts)
//   alert        box → KMS    1    no        {code, detail, at}: raised alerts, as they happen
//   event        box → KMS    1    no        {type, ...}: informational events
//   csr          box → KMS    1    no        {requestId, csr: PEM PKCS#10}: rotate-cert; a new
//                                           P-256 MQTT client key, CN = the box CN (identity.ts)
//   cert         KMS → box    1    no        KMS-signed {requestId, cert: PEM} issued by the broker's
//                                           client CA, or {requestId, error{code,detail}}: the answer
//   resync       box → KMS    1    no        {requestId}: the box lost its state (safe mode) and asks
//                                           for the last command seq the KMS relayed to it
//   sync         KMS → box    1    no        KMS-signed {requestId, lastSeq}: the answer; the box
//                                           leaves safe mode with lastSeq = max(its own, this)
//   update       KMS → box    1    no        a signed update manifest (services/updater/manifest.ts)
//   update-chunk KMS → box    1    no        {id, i, data: base64}: bundle chunk i of manifest id
//   update-status box → KMS   1    no        {type: update-progress|update-result, ...} from the updater
//   attest       box → KMS    1    no        remote attestation (appliance/contracts/attestation.ts):
//                                           enroll, activate, challenge, quote (with the event log
//                                           and the vault's signed gate report)
//   attest-answer KMS → box   1    no        KMS-signed (kind `attest`) {requestId, credential |
//                                           nonce | ok, state, error?}: the answer to one of those
//
// QoS 1 everywhere and a persistent session (clean: false + sessionExpiryInterval) on both
// sides: what was published while the other side was away is delivered when it comes back.
// Delivery can be duplicated and reordered; every handler is idempotent (batch chunk index,
// requestId, fileId, command seq). Batches are signed by the batch signer, commands by ops,
// acks, cert and sync answers by the KMS (batch signer): nothing is trusted for being on the broker.

export const PREFIX = 'pks/v1/box';

export const TOPICS = ['batch', 'reorder', 'resend', 'verify', 'ack', 'cmd', 'cmd-result', 'status', 'alert', 'event', 'csr', 'cert', 'resync', 'sync', 'update', 'update-chunk', 'update-status', 'attest', 'attest-answer'] as const;
export type TopicName = (typeof TOPICS)[number];

/** Topics the box subscribes to; the rest it publishes. */
export const BOX_INBOUND: readonly TopicName[] = ['batch', 'ack', 'cmd', 'cert', 'sync', 'update', 'update-chunk', 'attest-answer'];
/** Topics the box publishes (the broker ACL grants it exactly these, write only). */
export const BOX_OUTBOUND: readonly TopicName[] = ['reorder', 'resend', 'verify', 'cmd-result', 'status', 'alert', 'event', 'csr', 'resync', 'update-status', 'attest'];
/** Topics the KMS subscribes to (for every box). */
export const KMS_INBOUND: readonly TopicName[] = BOX_OUTBOUND;

// A CN becomes a topic level: no MQTT wildcards or separators, and the same alphabet as NAME.
const CN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function isBoxCn(cn: string): boolean {
  return CN.test(cn);
}

export function boxTopic(boxCn: string, name: TopicName): string {
  if (!CN.test(boxCn)) throw new Error(`bad box CN for a topic: ${JSON.stringify(boxCn)}`);
  return `${PREFIX}/${boxCn}/${name}`;
}

/** `pks/v1/box/+/<name>` for the KMS's subscriptions. */
export const anyBoxTopic = (name: TopicName): string => `${PREFIX}/+/${name}`;

/** Splits an incoming topic into box CN and topic name, or null when it is not ours. */
export function parseTopic(topic: string): { boxCn: string; name: TopicName } | null {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}/${parts[2]}` !== PREFIX) return null;
  const [, , , boxCn, name] = parts as [string, string, string, string, string];
  if (!CN.test(boxCn) || !(TOPICS as readonly string[]).includes(name)) return null;
  return { boxCn, name: name as TopicName };
}
