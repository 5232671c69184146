// The vault's unlock verbs. The caller (the unlock service) sends fields, never bytes to sign:
// the vault builds the token (appliance/unlock-token.ts) and the user certificates itself, with
// its own clock as the judge of validity, and signs them with keys no other verb reaches.
import { createHash } from 'node:crypto';
import type { VerbTable } from '../../appliance/ipc.js';
import { pksError } from '../../appliance/errors.js';
import { NAME, b64, hex } from '../../appliance/schema.js';
import { CHALLENGE_MAX, CHALLENGE_MIN, ECU_TYPE_RE, TOKEN_MAX_LIFETIME_S, encodeSigned, maskFromBytes, tokenKeyId } from '../../appliance/unlock-token.js';
import { TOKEN_KEY_NAME, USER_CA_KEY, tokenKeyName } from './unlock-keys.js';
import type { Vault } from './vault.js';

const obj = (required: string[], properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required, properties });
const hexRange = (min: number, max: number) => ({ type: 'string', pattern: `^([0-9a-fA-F]{2}){${min},${max}}$` }) as const;
const SECONDS = { type: 'integer', minimum: 0, maximum: 2 ** 40 } as const;
/** how far a caller's notBefore may sit from the vault's clock */
const CLOCK_SLACK_S = 300;
/** user certificates: at most this long, whatever the caller asks */
const USER_CERT_MAX_DAYS = 400;
const ROLE = { type: 'string', pattern: '^[A-Z][A-Z0-9_]{0,31}$' } as const;

/** The verbs the unlock service may use (pksctl only reads public keys). */
export const UNLOCK_CALLER_VERBS = ['status', 'unlock-token-sign', 'unlock-public-key', 'unlock-user-ca-cert', 'unlock-user-cert'] as const;

export function unlockVerbs(vault: Vault): VerbTable {
  let caPem: Promise<{ pem: string; subject: string; aki: string }> | null = null;
  const boxId = (): string => String(vault.status().boxId);
  const x509 = () => import('../../appliance/x509.js');
  const signer = (key: `unlock-${string}`) => async (tbs: Buffer) => vault.signUnlockStructure(key, tbs);

  const userCa = (): Promise<{ pem: string; subject: string; aki: string }> =>
    (caPem ??= (async () => {
      const X = await import('@peculiar/x509');
      const { keyIdentifier, signCertificate } = await x509();
      const spki = vault.publicKey(USER_CA_KEY);
      const aki = keyIdentifier(spki);
      const subject = `CN=PKS unlock user CA ${boxId()},O=PKS`;
      const cert = await signCertificate(
        {
          // fixed from the key, so every answer names the same CA
          serial: '40' + createHash('sha256').update(spki).digest('hex').slice(0, 30),
          subject,
          issuer: subject,
          spki,
          notBefore: new Date('2024-01-01T00:00:00Z'),
          notAfter: new Date('2099-12-31T00:00:00Z'),
          extensions: [
            new X.BasicConstraintsExtension(true, 0, true),
            new X.KeyUsagesExtension(X.KeyUsageFlags.keyCertSign | X.KeyUsageFlags.cRLSign, true),
            new X.SubjectKeyIdentifierExtension(aki),
          ],
        },
        signer(USER_CA_KEY),
      );
      return { pem: cert.toString('pem') + '\n', subject, aki };
    })().catch((e: unknown) => {
      caPem = null;
      throw e;
    }));

  return {
    'unlock-token-sign': {
      request: obj(['key', 'tokenId', 'ecuType', 'uid', 'challenge', 'permissions', 'notBefore', 'notAfter'], {
        key: TOKEN_KEY_NAME,
        tokenId: hex(16),
        ecuType: { type: 'string', pattern: ECU_TYPE_RE.source },
        uid: hexRange(1, 32),
        challenge: hexRange(CHALLENGE_MIN, CHALLENGE_MAX),
        permissions: hex(16),
        notBefore: SECONDS,
        notAfter: SECONDS,
      }),
      maxBytes: 2048,
      handler: (b: { key: string; tokenId: string; ecuType: string; uid: string; challenge: string; permissions: string; notBefore: number; notAfter: number }) => {
        const now = Math.floor(Date.now() / 1000);
        if (Math.abs(b.notBefore - now) > CLOCK_SLACK_S) throw pksError('PKS_OUT_OF_RANGE', 'notBefore is not now by the vault clock');
        if (b.notAfter - b.notBefore > TOKEN_MAX_LIFETIME_S) throw pksError('PKS_UNLOCK_LIFETIME', `token lifetime over ${TOKEN_MAX_LIFETIME_S} s`);
        const name = tokenKeyName(b.key);
        const keyId = tokenKeyId(vault.publicKey(name));
        const signed = encodeSigned({
          keyId,
          tokenId: Buffer.from(b.tokenId, 'hex'),
          ecuType: b.ecuType,
          uid: Buffer.from(b.uid, 'hex'),
          challenge: Buffer.from(b.challenge, 'hex'),
          permissions: maskFromBytes(Buffer.from(b.permissions, 'hex')),
          notBefore: b.notBefore,
          notAfter: b.notAfter,
        });
        const sig = vault.signUnlockStructure(name, signed);
        return { token: Buffer.concat([signed, sig]).toString('base64'), keyId: keyId.toString('hex') };
      },
    },
    'unlock-public-key': {
      request: obj(['key'], { key: { anyOf: [TOKEN_KEY_NAME, { const: 'user-ca' }] } }),
      handler: (b: { key: string }) => {
        const spki = vault.publicKey(b.key === 'user-ca' ? USER_CA_KEY : tokenKeyName(b.key));
        return { key: b.key, spki: spki.toString('base64'), keyId: tokenKeyId(spki).toString('hex') };
      },
    },
    'unlock-user-ca-cert': {
      request: obj([], {}),
      handler: async () => ({ certificate: (await userCa()).pem }),
    },
    'unlock-user-cert': {
      request: obj(['cn', 'role', 'serial', 'spki', 'notAfter'], { cn: NAME, role: ROLE, serial: hex(16), spki: b64(512), notAfter: { type: 'string', format: 'date-time', maxLength: 40 } }),
      maxBytes: 4096,
      handler: async (b: { cn: string; role: string; serial: string; spki: string; notAfter: string }) => {
        const { clientLeafExtensions, signCertificate } = await x509();
        const { p256PointFromSpki } = await import('../../appliance/ec-der.js');
        const spki = Buffer.from(b.spki, 'base64');
        p256PointFromSpki(spki);
        if (!/^[0-7]/.test(b.serial) || /^00/.test(b.serial)) throw pksError('PKS_BAD_REQUEST', 'serial must be a positive 16-byte integer');
        const now = Date.now();
        const notAfter = new Date(b.notAfter);
        if (!(notAfter.getTime() > now) || notAfter.getTime() - now > USER_CERT_MAX_DAYS * 86_400_000) throw pksError('PKS_OUT_OF_RANGE', `certificate must end within ${USER_CERT_MAX_DAYS} days`);
        const ca = await userCa();
        const cert = await signCertificate(
          { serial: b.serial, subject: `CN=${b.cn},OU=${b.role},O=PKS unlock users`, issuer: ca.subject, spki, notBefore: new Date(now - 60_000), notAfter, extensions: clientLeafExtensions(spki, ca.aki) },
          signer(USER_CA_KEY),
        );
        return { certificate: cert.toString('pem') + '\n', serial: b.serial, notAfter: notAfter.toISOString() };
      },
    },
  };
}
