// The vault's PKCS#11 layer against a real SoftHSM2 token (fresh per suite). Where the test
// needs to look behind the Hsm class (attributes, wrapping, deleting keys, killing sessions)
// it uses raw pkcs11js on the same module.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import crypto from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { Handle } from 'pkcs11js';
import { isPksError } from '../../appliance/errors.js';
import { Hsm, rawToDer, type HsmConfig, type KeyName } from '../../services/vault/hsm.js';
import { makeToken, type SoftHsmToken } from '../helpers/softhsm.js';

type P11 = InstanceType<typeof pkcs11js.PKCS11>;

const ALL: KeyName[] = ['identity', 'transport', 'storage', 'audit', 'ecu-ca'];

function expectCode(fn: () => unknown, code: string, msg?: string): Error {
  try {
    fn();
  } catch (e) {
    assert.ok(isPksError(e), `expected a PksError, got ${String(e)}`);
    assert.is(e.code, code, msg ?? e.message);
    return e;
  }
  assert.unreachable(`expected ${code}`);
  throw new Error('unreachable');
}

function ckr(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return /CKR_[A-Z0-9_]+/.exec((e as Error).message)?.[0] ?? `non-PKCS#11 error: ${String(e)}`;
  }
  return 'CKR_OK';
}

/**
 * Raw access to the token. While an Hsm is open the library is already initialised and logged
 * in (both are per process), so we join that state and must not finalise it.
 */
function raw<T>(tok: SoftHsmToken, fn: (p11: P11, session: Handle, slot: Handle) => T): T {
  process.env.SOFTHSM2_CONF = tok.conf;
  const p11 = new pkcs11js.PKCS11();
  p11.load(tok.module);
  let owner = true;
  try {
    p11.C_Initialize();
  } catch (e) {
    if (!/CKR_CRYPTOKI_ALREADY_INITIALIZED/.test((e as Error).message)) throw e;
    owner = false;
  }
  try {
    const slot = p11.C_GetSlotList(true).find((s) => p11.C_GetTokenInfo(s).label.trimEnd() === tok.label);
    assert.ok(slot, 'token slot');
    const session = p11.C_OpenSession(slot!, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    try {
      try {
        p11.C_Login(session, pkcs11js.CKU_USER, tok.pin);
      } catch (e) {
        if (!/CKR_USER_ALREADY_LOGGED_IN/.test((e as Error).message)) throw e;
      }
      return fn(p11, session, slot!);
    } finally {
      try {
        p11.C_CloseSession(session);
      } catch {
        // closed by the test itself (C_CloseAllSessions)
      }
    }
  } finally {
    if (owner) p11.C_Finalize();
  }
}

function findByLabel(p11: P11, session: Handle, cls: number, label: string): Handle[] {
  p11.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: cls },
    { type: pkcs11js.CKA_LABEL, value: label },
  ]);
  try {
    return p11.C_FindObjects(session, 10);
  } finally {
    p11.C_FindObjectsFinal(session);
  }
}

interface Ctx {
  tok: SoftHsmToken;
  cfg: HsmConfig;
}
const H = suite<Ctx>('vault/hsm', {} as Ctx);

H.before(async (ctx) => {
  ctx.tok = await makeToken('pks-hsm-test');
  ctx.cfg = { module: ctx.tok.module, tokenLabel: ctx.tok.label, pin: ctx.tok.pin, softhsm2Conf: ctx.tok.conf };
});

H.after(async (ctx) => {
  await ctx.tok?.cleanup();
});

function withHsm<T>(cfg: HsmConfig, fn: (hsm: Hsm) => T): T {
  const hsm = Hsm.open(cfg);
  try {
    return fn(hsm);
  } finally {
    hsm.close();
  }
}

H('creates the hierarchy once; a second open finds it and creates nothing', ({ cfg }) => {
  withHsm(cfg, (hsm) => {
    assert.equal(hsm.ensureHierarchy().created.sort(), [...ALL].sort());
    hsm.checkHierarchy();
    assert.equal(hsm.ensureHierarchy().created, []);
  });
  withHsm(cfg, (hsm) => {
    assert.equal(hsm.ensureHierarchy().created, []);
    hsm.checkHierarchy();
  });
});

H('token objects carry the labels, ids and usages of the policy', ({ tok }) => {
  raw(tok, (p11, session) => {
    const bool = (h: Handle, type: number): boolean => p11.C_GetAttributeValue(session, h, [{ type }])[0]!.value[0] === 1;
    const [storage] = findByLabel(p11, session, pkcs11js.CKO_SECRET_KEY, 'pks-storage');
    assert.ok(storage);
    assert.is(bool(storage!, pkcs11js.CKA_ENCRYPT), true);
    assert.is(bool(storage!, pkcs11js.CKA_WRAP), false);
    assert.is(bool(storage!, pkcs11js.CKA_UNWRAP), false);
    const [transport] = findByLabel(p11, session, pkcs11js.CKO_PRIVATE_KEY, 'pks-transport');
    assert.is(bool(transport!, pkcs11js.CKA_DERIVE), true);
    assert.is(bool(transport!, pkcs11js.CKA_SIGN), false);
    const [identity] = findByLabel(p11, session, pkcs11js.CKO_PRIVATE_KEY, 'pks-identity');
    assert.is(bool(identity!, pkcs11js.CKA_SIGN), true);
    assert.is(bool(identity!, pkcs11js.CKA_DERIVE), false);
    const id = p11.C_GetAttributeValue(session, identity!, [{ type: pkcs11js.CKA_ID }])[0]!.value;
    assert.is(id.toString(), 'pks-identity');
    const [identityPub] = findByLabel(p11, session, pkcs11js.CKO_PUBLIC_KEY, 'pks-identity');
    assert.is(bool(identityPub!, pkcs11js.CKA_VERIFY), true);
    assert.is(bool(identityPub!, pkcs11js.CKA_ENCRYPT), false);
  });
});

H('no key can be read out or wrapped', ({ tok }) => {
  raw(tok, (p11, session) => {
    // a wrapping key of our own, and proof that wrapping itself works on this token
    const aes = (extractable: boolean): Handle =>
      p11.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
        { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
        { type: pkcs11js.CKA_TOKEN, value: false },
        { type: pkcs11js.CKA_WRAP, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: extractable },
      ]);
    const wrapping = aes(false);
    const wrapMech = { mechanism: pkcs11js.CKM_AES_KEY_WRAP_PAD };
    const control = p11.C_WrapKey(session, wrapMech, wrapping, aes(true), Buffer.alloc(1024));
    assert.ok(control.length >= 40, 'control wrap works');

    for (const name of ALL) {
      const cls = name === 'storage' ? pkcs11js.CKO_SECRET_KEY : pkcs11js.CKO_PRIVATE_KEY;
      const found = findByLabel(p11, session, cls, `pks-${name}`);
      assert.is(found.length, 1, name);
      const key = found[0]!;
      assert.is(ckr(() => p11.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_VALUE }])), 'CKR_ATTRIBUTE_SENSITIVE', name);
      const code = ckr(() => p11.C_WrapKey(session, wrapMech, wrapping, key, Buffer.alloc(1024)));
      assert.ok(['CKR_KEY_UNEXTRACTABLE', 'CKR_KEY_NOT_WRAPPABLE'].includes(code), `${name}: ${code}`);
      // and the policy cannot be relaxed afterwards
      const relax = ckr(() => p11.C_SetAttributeValue(session, key, [{ type: pkcs11js.CKA_EXTRACTABLE, value: true }]));
      assert.is.not(relax, 'CKR_OK', `${name} became extractable`);
    }
  });
});

H('issue 9 item 7: every HSM key object is CKA_COPYABLE=false, read back from SoftHSM', ({ tok }) => {
  raw(tok, (p11, session) => {
    for (const name of ALL) {
      const classes = name === 'storage' ? [pkcs11js.CKO_SECRET_KEY] : [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY];
      for (const cls of classes) {
        const [h] = findByLabel(p11, session, cls, `pks-${name}`);
        assert.ok(h, `${name} ${cls}`);
        const v = p11.C_GetAttributeValue(session, h!, [{ type: pkcs11js.CKA_COPYABLE }])[0]!.value;
        assert.is(v[0], 0, `pks-${name} (class ${cls}) is copyable`);
        // C_CopyObject is refused too
        assert.is.not(ckr(() => p11.C_CopyObject(session, h!, [{ type: pkcs11js.CKA_TOKEN, value: false }])), 'CKR_OK', `${name} copied`);
      }
    }
  });
});

H('sign: ECDSA P-256 over SHA-256, verified by node (raw and DER)', ({ cfg }) => {
  withHsm(cfg, (hsm) => {
    const data = Buffer.from('verification file 0042');
    for (const name of ['identity', 'audit', 'ecu-ca'] as const) {
      const pub = crypto.createPublicKey({ key: hsm.publicKey(name), format: 'der', type: 'spki' });
      const sig = hsm.sign(name, data);
      assert.is(sig.length, 64);
      assert.ok(crypto.verify('sha256', data, { key: pub, dsaEncoding: 'ieee-p1363' }, sig), `${name} raw`);
      assert.ok(crypto.verify('sha256', data, pub, rawToDer(sig)), `${name} DER`);
      assert.not.ok(crypto.verify('sha256', Buffer.from('other'), { key: pub, dsaEncoding: 'ieee-p1363' }, sig));
    }
    // keys are distinct: identity's signature does not verify under audit's key
    const auditPub = crypto.createPublicKey({ key: hsm.publicKey('audit'), format: 'der', type: 'spki' });
    assert.not.ok(crypto.verify('sha256', data, { key: auditPub, dsaEncoding: 'ieee-p1363' }, hsm.sign('identity', data)));
    expectCode(() => hsm.sign('transport' as never, data), 'PKS_KEY_UNKNOWN');
    expectCode(() => hsm.sign('identity', 'text' as never), 'PKS_BAD_REQUEST');
    expectCode(() => hsm.publicKey('storage' as never), 'PKS_KEY_UNKNOWN');
  });
});

H('rawToDer encodes high-bit and leading-zero integers', () => {
  const sig = Buffer.concat([Buffer.alloc(32, 0xff), Buffer.concat([Buffer.alloc(31, 0), Buffer.from([0x01])])]);
  const der = rawToDer(sig);
  assert.is(der.toString('hex'), `3026022100${'ff'.repeat(32)}020101`);
  expectCode(() => rawToDer(Buffer.alloc(63)), 'PKS_BAD_REQUEST');
});

H('ecdh agrees with node ECDH from the other side', ({ cfg }) => {
  withHsm(cfg, (hsm) => {
    const peer = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const peerSpki = peer.publicKey.export({ format: 'der', type: 'spki' });
    const ours = hsm.ecdh(peerSpki);
    const transport = crypto.createPublicKey({ key: hsm.publicKey('transport'), format: 'der', type: 'spki' });
    const theirs = crypto.diffieHellman({ privateKey: peer.privateKey, publicKey: transport });
    assert.is(ours.length, 32);
    assert.ok(ours.equals(theirs));
    // the derived session object is gone again
    raw(tokOf(cfg), (p11, session) => {
      p11.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET }]);
      const left = p11.C_FindObjects(session, 10);
      p11.C_FindObjectsFinal(session);
      assert.is(left.length, 0);
    });
  });
});

H('ecdh refuses anything but a valid P-256 SPKI', ({ cfg }) => {
  withHsm(cfg, (hsm) => {
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({ format: 'der', type: 'spki' });
    const ed = crypto.generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' });
    const good = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' });
    const offCurve = Buffer.from(good);
    offCurve[offCurve.length - 1]! ^= 0x01;
    for (const bad of [Buffer.alloc(0), Buffer.from('not der'), p384, ed, offCurve, Buffer.alloc(4096, 0x30), 'x' as never]) {
      expectCode(() => hsm.ecdh(bad), 'PKS_BAD_REQUEST');
    }
  });
});

H('seal/open round-trip; wrong aad, tampering and truncation are PKS_SEAL_INVALID', ({ cfg }) => {
  withHsm(cfg, (hsm) => {
    const aad = Buffer.from('record:0001');
    const pt = crypto.randomBytes(300);
    const blob = hsm.seal(pt, aad);
    assert.is(blob.length, 12 + 300 + 16);
    assert.ok(hsm.open(blob, aad).equals(pt));
    assert.not.ok(hsm.seal(pt, aad).equals(blob), 'fresh IV per seal');
    expectCode(() => hsm.seal(Buffer.alloc(0), aad), 'PKS_BAD_REQUEST');
    assert.ok(hsm.open(hsm.seal(Buffer.from([7]), Buffer.alloc(0)), Buffer.alloc(0)).equals(Buffer.from([7])));

    expectCode(() => hsm.open(blob, Buffer.from('record:0002')), 'PKS_SEAL_INVALID');
    for (const at of [0, 11, 12, 200, blob.length - 1]) {
      const t = Buffer.from(blob);
      t[at]! ^= 0x80;
      expectCode(() => hsm.open(t, aad), 'PKS_SEAL_INVALID', `flip at ${at}`);
    }
    expectCode(() => hsm.open(blob.subarray(0, 27), aad), 'PKS_SEAL_INVALID');
    expectCode(() => hsm.open(blob.subarray(0, blob.length - 1), aad), 'PKS_SEAL_INVALID');
    // the session stays usable after failed decryptions
    assert.ok(hsm.open(blob, aad).equals(pt));
    expectCode(() => hsm.seal(Buffer.alloc(64 * 1024 + 1), aad), 'PKS_TOO_LARGE');
    expectCode(() => hsm.seal(pt, Buffer.alloc(1025)), 'PKS_TOO_LARGE');
  });
});

H('random and status', ({ cfg }) => {
  withHsm(cfg, (hsm) => {
    assert.is(hsm.random(32).length, 32);
    assert.not.ok(hsm.random(16).equals(hsm.random(16)));
    for (const n of [0, -1, 1.5, 65537, Number.NaN]) expectCode(() => hsm.random(n), 'PKS_OUT_OF_RANGE');
    const s = hsm.status();
    assert.is(s.tokenLabel, 'pks-hsm-test');
    assert.is(s.manufacturer, 'SoftHSM project');
    assert.ok(s.model.startsWith('SoftHSM'));
    assert.ok(s.serial.length > 0);
    assert.is(s.loggedIn, true);
    assert.equal(s.keys, { identity: true, transport: true, storage: true, audit: true, 'ecu-ca': true });
    hsm.ping();
  });
});

H('a lost session is re-opened: by ping, and transparently by an operation', ({ cfg, tok }) => {
  withHsm(cfg, (hsm) => {
    const data = Buffer.from('after restart');
    const pub = crypto.createPublicKey({ key: hsm.publicKey('identity'), format: 'der', type: 'spki' });
    raw(tok, (p11, _session, slot) => p11.C_CloseAllSessions(slot));
    assert.is(hsm.status().loggedIn, false);
    hsm.ping();
    assert.is(hsm.status().loggedIn, true);

    raw(tok, (p11, _session, slot) => p11.C_CloseAllSessions(slot));
    const sig = hsm.sign('identity', data);
    assert.ok(crypto.verify('sha256', data, { key: pub, dsaEncoding: 'ieee-p1363' }, sig));
  });
});

H('a module finalised under us (HSM restart) is initialised again by ping', ({ cfg, tok }) => {
  withHsm(cfg, (hsm) => {
    const data = Buffer.from('after module restart');
    // a second pkcs11js object on the same library shares its state: finalising it pulls the
    // rug from under the Hsm exactly like a restarted HSM daemon would
    process.env.SOFTHSM2_CONF = tok.conf;
    const other = new pkcs11js.PKCS11();
    other.load(tok.module);
    other.C_Finalize();
    assert.is(hsm.status().loggedIn, false);
    hsm.ping();
    assert.is(hsm.status().loggedIn, true);
    const pub = crypto.createPublicKey({ key: hsm.publicKey('audit'), format: 'der', type: 'spki' });
    assert.ok(crypto.verify('sha256', data, { key: pub, dsaEncoding: 'ieee-p1363' }, hsm.sign('audit', data)));
  });
});

H('fail closed: wrong PIN, unknown label, missing module, bad config', ({ cfg }) => {
  const e = expectCode(() => Hsm.open({ ...cfg, pin: 'wrong-pin-1234' }), 'PKS_HSM_LOGIN');
  assert.not.ok(e.message.includes('wrong-pin-1234'));
  assert.not.ok(JSON.stringify(e).includes('wrong-pin-1234'));
  expectCode(() => Hsm.open({ ...cfg, tokenLabel: 'no-such-token' }), 'PKS_HSM_TOKEN');
  expectCode(() => Hsm.open({ ...cfg, module: '/nonexistent/libpkcs11.so' }), 'PKS_HSM_MODULE');
  expectCode(() => Hsm.open({ ...cfg, module: 'relative.so' }), 'PKS_CONFIG_INVALID');
  expectCode(() => Hsm.open({ ...cfg, pin: '12' }), 'PKS_CONFIG_INVALID');
  expectCode(() => Hsm.open(null as never), 'PKS_CONFIG_INVALID');
  // failures released the module: a correct open still works
  withHsm(cfg, (hsm) => hsm.checkHierarchy());
});

H('closed is closed', ({ cfg }) => {
  const hsm = Hsm.open(cfg);
  hsm.close();
  hsm.close();
  expectCode(() => hsm.sign('identity', Buffer.from('x')), 'PKS_HSM_FAILURE');
  expectCode(() => hsm.ping(), 'PKS_HSM_FAILURE');
  assert.is(hsm.status().loggedIn, false);
  // the PIN is not reachable through the object
  assert.not.ok(JSON.stringify(hsm).includes(cfg.pin));
});

H('a deleted key is PKS_HSM_KEY_MISSING; a weak one is PKS_HSM_KEY_POLICY', ({ cfg, tok }) => {
  withHsm(cfg, (hsm) => {
    assert.is(hsm.sign('audit', Buffer.from('warm the handle cache')).length, 64);
    raw(tok, (p11, session) => {
      for (const h of findByLabel(p11, session, pkcs11js.CKO_PRIVATE_KEY, 'pks-audit')) p11.C_DestroyObject(session, h);
    });
    // the cached handle died with the object
    expectCode(() => hsm.sign('audit', Buffer.from('x')), 'PKS_HSM_KEY_MISSING');
    expectCode(() => hsm.checkHierarchy(), 'PKS_HSM_KEY_MISSING');
    assert.is(hsm.status().keys.audit, false);
    // half a pair is not silently replaced
    expectCode(() => hsm.ensureHierarchy(), 'PKS_HSM_KEY_MISSING');
  });
  withHsm(cfg, (hsm) => expectCode(() => hsm.checkHierarchy(), 'PKS_HSM_KEY_MISSING'));

  // an extractable impostor under our label
  raw(tok, (p11, session) => {
    for (const h of findByLabel(p11, session, pkcs11js.CKO_PUBLIC_KEY, 'pks-audit')) p11.C_DestroyObject(session, h);
    p11.C_GenerateKeyPair(
      session,
      { mechanism: pkcs11js.CKM_EC_KEY_PAIR_GEN },
      [
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_LABEL, value: 'pks-audit' },
        { type: pkcs11js.CKA_EC_PARAMS, value: Buffer.from('06082a8648ce3d030107', 'hex') },
        { type: pkcs11js.CKA_VERIFY, value: true },
      ],
      [
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_LABEL, value: 'pks-audit' },
        { type: pkcs11js.CKA_SIGN, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: true },
      ],
    );
  });
  withHsm(cfg, (hsm) => {
    const e = expectCode(() => hsm.checkHierarchy(), 'PKS_HSM_KEY_POLICY');
    assert.match(e.message, /pks-audit/);
  });

  // removing the impostor lets ensureHierarchy make a proper one again
  raw(tok, (p11, session) => {
    for (const cls of [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY]) {
      for (const h of findByLabel(p11, session, cls, 'pks-audit')) p11.C_DestroyObject(session, h);
    }
  });
  withHsm(cfg, (hsm) => {
    assert.equal(hsm.ensureHierarchy().created, ['audit']);
    hsm.checkHierarchy();
  });
});

// cfg carries what raw() needs, except the label/module/pin field names differ
function tokOf(cfg: HsmConfig): SoftHsmToken {
  return { dir: '', conf: cfg.softhsm2Conf!, module: cfg.module, label: cfg.tokenLabel, pin: cfg.pin, soPin: '', cleanup: async () => {} };
}

H.run();
