// UDS client against the UDS ECU simulator (scripts/plant/ecu-uds.ts) over real DoIP sockets:
// the key-programming sequence per ECU type, the rules the ECU keeps (session, security access
// with lockout, authentication hook), negative responses, 0x78 response pending and timeouts.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { DoipClient } from '../../appliance/doip/client.js';
import type { DoipEntity } from '../../appliance/doip/entity.js';
import { sheMessages, sheVerify } from '../../appliance/she.js';
import { ALGORITHM_UNLOCK_TOKEN, type EcuAuthenticator } from '../../appliance/uds/auth.js';
import { UdsClient } from '../../appliance/uds/client.js';
import { NRC, UdsNegative } from '../../appliance/uds/codec.js';
import { DEFAULT_MAPPING, devSecuritySecret, mappingFor, parseMapping, securityKey } from '../../appliance/uds/mapping.js';
import { UdsEcu, serveDoip } from '../../scripts/plant/ecu-uds.js';

const master = randomBytes(16);
const uid = (): Buffer => Buffer.concat([Buffer.from([0x10]), randomBytes(14)]);
// the 0x29 hook as the unlock issue will fill it: here an HMAC-less toy (token = challenge reversed)
const toyAuth: EcuAuthenticator = { challenge: () => randomBytes(32), verify: (c, t) => ({ ok: Buffer.from(c).reverse().equals(t) }) };

const ecus = new Map<number, UdsEcu>();
const add = (addr: number, type: string, extra: Partial<ConstructorParameters<typeof UdsEcu>[0]> = {}): UdsEcu => {
  const mapping = type === 'locked' ? { ...DEFAULT_MAPPING.types.bcm!, authentication: 'unlock-token' as const } : mappingFor(DEFAULT_MAPPING, `oem1.${type}.k`);
  const e = new UdsEcu({ type: type === 'locked' ? 'bcm' : type, mapping, uid: uid(), masterKey: master, ...extra });
  ecus.set(addr, e);
  return e;
};
let entity: DoipEntity;
let doip: DoipClient;

const s = suite('UDS over DoIP against the ECU simulator');
s.before(async () => {
  entity = await serveDoip({ identity: { vin: 'WPKS0000000000002', logicalAddress: 0x1000, eid: Buffer.alloc(6, 2), gid: Buffer.alloc(6, 2) }, ecus: (a) => ecus.get(a), tcp: { host: '127.0.0.1', port: 0 } });
  doip = await DoipClient.connect({ host: '127.0.0.1', port: entity.tcpPort!, sourceAddress: 0x0e80 });
  await doip.activate();
});
s.after(async () => {
  doip.close();
  await entity.close();
});

const pkg = (ecu: UdsEcu, counter = 1) => sheMessages({ uid: ecu.uid, keyId: 4, authKeyId: 1, authKey: master, newKey: randomBytes(16), counter, flags: 0 });

s('bcm: session, seed/key, UID, M1-M3 by RoutineControl, M4/M5 that verify, reset', async () => {
  const ecu = add(0x1101, 'bcm');
  const u = new UdsClient(doip.link(0x1101));
  const t = await u.session(0x02);
  assert.equal(t, { p2Ms: 50, p2StarMs: 5000 });
  await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
  assert.ok(ecu.unlocked);
  assert.ok((await u.readDid(0xf1a0)).equals(ecu.uid));
  const m = pkg(ecu);
  const proof = await u.routine(0x0301, Buffer.concat([m.m1, m.m2, m.m3]));
  assert.ok(proof.subarray(0, 32).equals(m.m4) && proof.subarray(32).equals(m.m5));
  await u.testerPresent(false);
  await u.testerPresent(true);
  await u.ecuReset(1);
  assert.is(ecu.session, 1);
  assert.not.ok(ecu.unlocked);
});

s('gateway: M1-M3 by WriteDataByIdentifier, proof by ReadDataByIdentifier', async () => {
  const ecu = add(0x1102, 'gateway');
  const u = new UdsClient(doip.link(0x1102));
  await u.session(0x03);
  await u.securityAccess(0x01, (seed) => securityKey('aes128-cmac', devSecuritySecret('gateway', 0x01), seed));
  const nk = randomBytes(16);
  const m = sheMessages({ uid: ecu.uid, keyId: 5, authKeyId: 1, authKey: master, newKey: nk, counter: 3, flags: 0 });
  await u.readDid(0xf1a2).then(
    () => assert.unreachable(),
    (e) => assert.is((e as UdsNegative).nrc, NRC.requestSequenceError),
  );
  await u.writeDid(0xf1a1, Buffer.concat([m.m1, m.m2, m.m3]));
  const proof = await u.readDid(0xf1a2);
  assert.ok(sheVerify({ uid: ecu.uid, keyId: 5, authKeyId: 1, authKey: master, newKey: nk, counter: 3, flags: 0 }, proof.subarray(0, 32), proof.subarray(32)));
});

s('the ECU keeps its rules: wrong session, no security access, wrong keys and lockout, bad lengths, unknown services', async () => {
  const ecu = add(0x1103, 'bcm', { lockoutMs: 300 });
  const u = new UdsClient(doip.link(0x1103));
  const nrc = async (p: Promise<unknown>): Promise<number> =>
    await p.then(
      () => -1,
      (e) => (e instanceof UdsNegative ? e.nrc : -2),
    );
  const m = pkg(ecu);
  const load = Buffer.concat([m.m1, m.m2, m.m3]);
  assert.is(await nrc(u.routine(0x0301, load)), NRC.serviceNotSupportedInActiveSession);
  assert.is(await nrc(u.securityAccess(0x11, () => Buffer.alloc(16))), NRC.serviceNotSupportedInActiveSession);
  await u.session(0x02);
  assert.is(await nrc(u.routine(0x0301, load)), NRC.securityAccessDenied);
  assert.is(await nrc(u.securityAccess(0x11, () => Buffer.alloc(16))), NRC.invalidKey);
  assert.is(await nrc(u.securityAccess(0x11, () => Buffer.alloc(16))), NRC.invalidKey);
  assert.is(await nrc(u.securityAccess(0x11, () => Buffer.alloc(16))), NRC.exceedNumberOfAttempts);
  assert.is(await nrc(u.securityAccess(0x11, () => Buffer.alloc(16))), NRC.requiredTimeDelayNotExpired);
  await new Promise((r) => setTimeout(r, 350));
  await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
  assert.is(await nrc(u.routine(0x0301, load.subarray(0, 40))), NRC.incorrectMessageLengthOrInvalidFormat);
  assert.is(await nrc(u.routine(0x0999, load)), NRC.requestOutOfRange);
  assert.is(await nrc(u.request(Buffer.from([0x85, 0x01]))), NRC.serviceNotSupported);
  assert.is(await nrc(u.request(Buffer.from([0x10, 0x09]))), NRC.subFunctionNotSupported);
  // a SHE refusal (wrong auth key: M3 does not verify) is generalProgrammingFailure
  const bad = sheMessages({ uid: ecu.uid, keyId: 4, authKeyId: 1, authKey: randomBytes(16), newKey: randomBytes(16), counter: 1, flags: 0 });
  await u.session(0x02);
  await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
  assert.is(await nrc(u.routine(0x0301, Buffer.concat([bad.m1, bad.m2, bad.m3]))), NRC.generalProgrammingFailure);
  await u.routine(0x0301, load);
  // the same package again: SHE refuses a counter not above the stored one
  assert.is(await nrc(u.routine(0x0301, load)), NRC.generalProgrammingFailure);
});

s('0x78 response pending: the client waits P2* and gets the answer; a silent ECU is PKS_UDS_TIMEOUT; busy is retried', async () => {
  const ecu = add(0x1104, 'bcm', { pendingMs: 300 });
  const u = new UdsClient(doip.link(0x1104), { p2Ms: 100 });
  await u.session(0x02);
  u.timing = { ...u.timing, p2Ms: 100 }; // shorter than the 300 ms the load takes: only P2* saves us
  await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
  const m = pkg(ecu);
  const t0 = Date.now();
  const proof = await u.routine(0x0301, Buffer.concat([m.m1, m.m2, m.m3]));
  assert.ok(Date.now() - t0 >= 280);
  assert.ok(proof.subarray(32).equals(m.m5));
  ecu.faults.silentOnce = 0x22;
  await u.readDid(0xf1a0).then(
    () => assert.unreachable(),
    (e) => assert.is((e as { code: string }).code, 'PKS_UDS_TIMEOUT'),
  );
  ecu.faults.nrcOnce = { sid: 0x22, nrc: NRC.busyRepeatRequest };
  assert.ok((await u.readDid(0xf1a0)).equals(ecu.uid), 'busyRepeatRequest retried');
});

s('Authentication 0x29 through the hook: programming needs it, a wrong token is refused', async () => {
  const ecu = add(0x1105, 'locked', { authenticator: toyAuth });
  const u = new UdsClient(doip.link(0x1105));
  await u.session(0x02);
  await u.securityAccess(0x11, (seed) => securityKey('aes128-cmac', devSecuritySecret('bcm', 0x11), seed));
  const m = pkg(ecu);
  await u.routine(0x0301, Buffer.concat([m.m1, m.m2, m.m3])).then(
    () => assert.unreachable(),
    (e) => assert.is((e as UdsNegative).nrc, NRC.authenticationRequired),
  );
  await u.authenticate(async () => Buffer.alloc(32)).then(
    () => assert.unreachable(),
    (e) => assert.is((e as UdsNegative).nrc, NRC.invalidKey),
  );
  let seen: Buffer | undefined;
  await u.authenticate(async (challenge, algo) => {
    seen = algo;
    return Buffer.from(challenge).reverse();
  });
  assert.ok(seen!.equals(ALGORITHM_UNLOCK_TOKEN));
  assert.ok(ecu.authenticated);
  await u.routine(0x0301, Buffer.concat([m.m1, m.m2, m.m3]));
});

s('the mapping is data: validated, bad documents refused with PKS_UDS_MAPPING_INVALID', () => {
  const ok = parseMapping({ v: 1, types: { abs: { session: 2, uidDid: 0xf1a0, load: { via: 'did', writeDid: 0xf1b0, readDid: 0xf1b1 } } } });
  assert.is(mappingFor(ok, 'oem9.abs.key4').type, 'abs');
  assert.ok(Object.isFrozen(ok.types.abs));
  for (const bad of [
    { v: 2, types: {} },
    { v: 1, types: { abs: { session: 2, uidDid: 0xf1a0, load: { via: 'routine' } } } },
    { v: 1, types: { abs: { session: 2, uidDid: 0x10000, load: { via: 'routine', routineId: 1 } } } },
    { v: 1, types: { abs: { session: 2, uidDid: 1, securityLevel: 2, securityAlgorithm: 'aes128-cmac', load: { via: 'routine', routineId: 1 } } } },
    { v: 1, types: { abs: { session: 2, uidDid: 1, securityLevel: 1, load: { via: 'routine', routineId: 1 } } } },
  ])
    assert.throws(() => parseMapping(bad), /PKS_UDS_MAPPING_INVALID/, JSON.stringify(bad));
  assert.throws(() => mappingFor(DEFAULT_MAPPING, 'oem1.airbag.key4'), /PKS_UDS_MAPPING_INVALID/);
});

s.run();
