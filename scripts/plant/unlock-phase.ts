// The demo's unlock story on the plant's box: plant IT onboards an engineer (request + approval)
// and certifies her from the HSM's user CA; she gets a token for the challenge of a returned ECU
// that no longer boots normally; the ECU opens a field-return analysis session; a replay of the
// token, a user whose access has run out, and a user central ops revoked by a signed MQTT command
// are refused; the log shows all of it. Self-contained: it starts the unlock service itself and
// answers the demo's unlock_* figures.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { UnlockLogEntry, UnlockUser } from '../../appliance/contracts/unlock.js';
import { namesOf } from '../../appliance/unlock-permissions.js';
import { signCommand } from '../../appliance/contracts/commands.js';
import { NRC, UnlockEcu, challengeOf, challengeRequest, nrcOf, proofRequest } from './ecu-unlock.js';
import type { Plant } from './plant.js';
import { waitFor } from './process.js';
import { startUnlock, unlockCall, type UnlockHandle } from './unlock.js';

export interface UnlockFigures {
  unlock_tokens: number;
  unlock_refused: number;
  unlock_logged: number;
}

export async function runUnlockPhase(plant: Plant, base: string, say: (s: string) => void): Promise<UnlockFigures & { svc: UnlockHandle }> {
  const { box } = plant;
  const since = new Date(Date.now() - 1000).toISOString();
  const svc = await startUnlock({ dir: path.join(base, 'unlock'), runDir: box.runDir, logDir: box.logDir, boxId: box.boxId });
  let tokens = 0;
  let refused = 0;
  say(`\n== unlock tokens: the unlock service on ${svc.url} (mTLS, user CA in the HSM)`);
  const anna = await svc.user('eng-anna', 'AFTER_SALES', 7 * 86_400);
  say(`plant IT onboarded eng-anna as AFTER_SALES for 7 days (request + approval) and issued her certificate ${anna.serial} from the HSM user CA`);
  const keys = await svc.admin.call<{ items: { keyId: string; spki: string }[] }>('public-keys');
  const returned = new UnlockEcu('bcm', Buffer.from('f1e1d1c1b1a191817161514131211f', 'hex'), keys.items.map((k) => Buffer.from(k.spki, 'base64')));
  const c = svc.client(anna);
  const me = await unlockCall<{ csrf: string }>(c, 'GET', '/v1/me');
  const challenge = challengeOf(returned.handle(challengeRequest()));
  const t = await unlockCall<{ token: string; tokenId: string; permissionNames: string[]; notAfter: string; code?: string }>(
    c,
    'POST',
    '/v1/tokens',
    { ecuType: 'bcm', uid: returned.uid.toString('hex'), challenge: challenge.toString('hex') },
    me.body.csrf,
  );
  if (t.status !== 200) throw new Error(`token request failed: ${JSON.stringify(t.body)}`);
  tokens++;
  const token = Buffer.from(t.body.token, 'base64');
  say(`eng-anna: token ${t.body.tokenId} for the returned ECU bcm/${returned.uid.toString('hex')} (challenge ${challenge.toString('hex').slice(0, 16)}...), ${t.body.permissionNames.join(', ')}, until ${t.body.notAfter}`);
  const open = nrcOf(returned.handle(proofRequest(token)));
  if (open !== null) throw new Error(`the ECU refused a good token: ${JSON.stringify(returned.lastRefusal)}`);
  say(`ECU: 0x29 verifyProofOfOwnership accepted; unlocked session with ${namesOf(returned.session!.permissions).join(', ')}`);

  // the same token again, on the next challenge: used once, never again
  returned.handle(Buffer.from([0x29, 0x00]));
  challengeOf(returned.handle(challengeRequest()));
  const replay = nrcOf(returned.handle(proofRequest(token)));
  if (replay !== NRC.ownershipVerificationFailed) throw new Error(`replay not refused (${replay})`);
  refused++;
  say(`ECU: the replayed token is refused with NRC 0x${replay.toString(16)} (${returned.lastRefusal!.reason})`);

  // a user whose access has run out
  const brief = await svc.user('eng-intern', 'TESTING', 2);
  const bc = svc.client(brief);
  const bme = await unlockCall<{ csrf: string }>(bc, 'GET', '/v1/me');
  await new Promise((r) => setTimeout(r, 2500));
  const late = await unlockCall<{ code: string; detail: string }>(bc, 'POST', '/v1/tokens', { ecuType: 'bcm', uid: returned.uid.toString('hex'), challenge: challengeOf(returned.handle(challengeRequest())).toString('hex') }, bme.body.csrf);
  if (late.body.code !== 'PKS_UNLOCK_EXPIRED') throw new Error(`expired user not refused: ${JSON.stringify(late.body)}`);
  refused++;
  say(`eng-intern (TESTING, access for 2 s): refused ${late.body.code}: ${late.body.detail}`);

  // central ops revokes a user by a signed MQTT command; the next request is refused
  const bob = await svc.user('eng-bob', 'AFTER_SALES', 86_400);
  const opsKey = await readFile(path.join(base, 'uplink', 'ops.key'), 'utf8');
  const cmd = signCommand({ v: 1, seq: Date.now(), expiresAt: new Date(Date.now() + 600_000).toISOString(), boxId: box.boxId, command: 'unlock-revoke', args: { cn: 'eng-bob', reason: 'badge returned' } }, opsKey);
  await plant.kms.fleet.call('send-command', { boxId: box.boxId, command: cmd });
  await waitFor('ops revocation', async () => (await svc.admin.call<{ items: UnlockUser[] }>('users')).items.find((u) => u.cn === 'eng-bob')?.state === 'REVOKED', 30_000, 200);
  const bobc = svc.client(bob);
  const bobMe = await unlockCall<{ code: string }>(bobc, 'GET', '/v1/me');
  if (bobMe.body.code !== 'PKS_UNLOCK_REVOKED') throw new Error(`revoked user not refused: ${JSON.stringify(bobMe.body)}`);
  refused++;
  say(`central ops: signed MQTT command unlock-revoke eng-bob; eng-bob's next request: ${bobMe.body.code}`);

  const log = (await svc.admin.call<{ items: UnlockLogEntry[] }>('log', { since, limit: 1000 })).items.reverse();
  say('== unlock log (pksctl unlock log):');
  for (const e of log) {
    const { seq, at, ev, cn, ...rest } = e;
    const keep = ['role', 'ecuType', 'uid', 'permissions', 'serial', 'reason', 'by', 'tokenId'].filter((k) => rest[k] !== undefined && rest[k] !== '');
    say(`  ${at} #${seq} ${ev.padEnd(11)} ${cn.padEnd(11)} ${keep.map((k) => `${k}=${String(rest[k])}`).join(' ')}`);
  }
  // the same entries reach the KMS through the outbox; central ops queries tokens across the fleet
  const atKms = await waitFor(
    'unlock entries at the KMS',
    async () => {
      const r = await plant.kms.fleet.call<{ items: { ev: string }[] }>('unlock-tokens', { boxId: box.boxId, ev: 'all', since });
      return r.items.length >= log.length ? r.items : undefined;
    },
    60_000,
    300,
  );
  const grants = await plant.kms.fleet.call<{ items: { cn: string; uid: string; tokenId: string }[] }>('unlock-tokens', { since });
  say(`KMS: ${atKms.length} unlock entries from ${box.boxId} arrived through the outbox; pks-fleet tokens: ${grants.items.map((g) => `${g.cn} → ${g.uid} (${g.tokenId.slice(0, 8)}...)`).join(', ')}`);
  return { unlock_tokens: tokens, unlock_refused: refused, unlock_logged: log.length, svc };
}
