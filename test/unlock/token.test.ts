// The token format v1 (appliance/contracts/unlock-token.md) and the ECU's 0x29 framing, without
// services: encode/decode round trip, the decoder's refusals, any flipped bit breaks the
// signature, and the ECU simulator's NRCs for malformed UDS requests.
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TOKEN_LEN, decodeToken, encodeSigned, tokenKeyId, tokenSignatureValid, type TokenFields } from '../../appliance/unlock-token.js';
import { autosarRole, maskOf } from '../../appliance/unlock-permissions.js';
import { NRC, UnlockEcu, challengeOf, challengeRequest, nrcOf, proofRequest } from '../../scripts/plant/ecu-unlock.js';

const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const spki = pair.publicKey.export({ format: 'der', type: 'spki' });
const UID = Buffer.from('0102030405060708090a0b0c0d0e0f', 'hex');
const mint = (f: Partial<TokenFields> = {}): Buffer => {
  const now = Math.floor(Date.now() / 1000);
  const signed = encodeSigned({ keyId: tokenKeyId(spki), tokenId: randomBytes(16), ecuType: 'bcm', uid: UID, challenge: randomBytes(32), permissions: maskOf(['EXTENDED_LOGGING']), notBefore: now, notAfter: now + 600, ...f });
  return Buffer.concat([signed, sign('sha256', signed, { key: pair.privateKey, dsaEncoding: 'ieee-p1363' })]);
};

test('round trip: every field comes back, the signature verifies, the size is fixed', () => {
  const ch = randomBytes(20);
  const raw = mint({ challenge: ch, permissions: maskOf(['DEBUG_READ', 'FIELD_RETURN_ANALYSIS']) | (1n << 100n) });
  assert.is(raw.length, TOKEN_LEN);
  const t = decodeToken(raw);
  assert.equal([t.ecuType, t.uid.toString('hex'), t.challenge.toString('hex')], ['bcm', UID.toString('hex'), ch.toString('hex')]);
  assert.is(t.permissions, maskOf(['DEBUG_READ', 'FIELD_RETURN_ANALYSIS']) | (1n << 100n));
  assert.is(autosarRole(t.permissions), 0b1010);
  assert.ok(tokenSignatureValid(t, spki));
});

test('the decoder refuses anything off the layout, coded', () => {
  const good = mint();
  const bad: Buffer[] = [good.subarray(1), Buffer.concat([good, Buffer.alloc(1)])];
  for (const [off, v] of [[0, 0x51], [4, 2], [5, 9], [7, 1], [48, 0], [48, 33], [81, 15], [81, 33], [47, 1], [80, 7]] as const) {
    const b = Buffer.from(good);
    b[off] = v;
    bad.push(b);
  }
  for (const b of bad) {
    let code = 'none';
    try {
      decodeToken(b);
    } catch (e) {
      code = (e as { code: string }).code;
    }
    assert.is(code, 'PKS_UNLOCK_TOKEN_INVALID');
  }
  assert.throws(() => encodeSigned({ ...decodeToken(good), notAfter: decodeToken(good).notBefore + 8 * 86_400 }), /lifetime/);
});

test('property: flipping any bit of a token makes it fail to decode or fail to verify', () => {
  const good = mint();
  fc.assert(
    fc.property(fc.integer({ min: 0, max: TOKEN_LEN * 8 - 1 }), (bit) => {
      const b = Buffer.from(good);
      b[bit >> 3] ^= 1 << (bit & 7);
      try {
        return !tokenSignatureValid(decodeToken(b), spki);
      } catch {
        return true;
      }
    }),
    { numRuns: 400 },
  );
});

test('ECU: malformed 0x29 requests are NRC 0x13, a proof without a challenge 0x24, unknown sub-functions 0x12', () => {
  const ecu = new UnlockEcu('bcm', UID, [spki]);
  assert.is(nrcOf(ecu.handle(Buffer.from([0x29]))), NRC.incorrectMessageLengthOrInvalidFormat);
  assert.is(nrcOf(ecu.handle(Buffer.from([0x29, 0x05, 0x00]))), NRC.incorrectMessageLengthOrInvalidFormat);
  assert.is(nrcOf(ecu.handle(Buffer.from([0x29, 0x42]))), NRC.subFunctionNotSupported);
  assert.is(nrcOf(ecu.handle(proofRequest(mint()))), NRC.requestSequenceError);
  const truncated = proofRequest(mint()).subarray(0, 100);
  challengeOf(ecu.handle(challengeRequest()));
  assert.is(nrcOf(ecu.handle(truncated)), NRC.incorrectMessageLengthOrInvalidFormat);
  // a good token for the challenge opens the session; unknown key: 0x58
  const ch = challengeOf(ecu.handle(challengeRequest()));
  assert.is(nrcOf(ecu.handle(proofRequest(mint({ challenge: ch })))), null, JSON.stringify(ecu.lastRefusal));
  const stranger = new UnlockEcu('bcm', UID, []);
  const ch2 = challengeOf(stranger.handle(challengeRequest()));
  assert.is(nrcOf(stranger.handle(proofRequest(mint({ challenge: ch2 })))), NRC.ownershipVerificationFailed);
  assert.match(stranger.lastRefusal!.reason, 'unknown signer key');
  // a token not yet valid (an hour ahead) is a time-period refusal
  const ch3 = challengeOf(ecu.handle(challengeRequest()));
  const now = Math.floor(Date.now() / 1000);
  assert.is(nrcOf(ecu.handle(proofRequest(mint({ challenge: ch3, notBefore: now + 3600, notAfter: now + 7200 })))), NRC.certificateVerificationFailedInvalidTimePeriod);
});

test.run();
