// The interactive side of `pksctl setup` (@clack/prompts): one question per answer, with its
// default shown and the answer checked as it is given, by the same field rule the answer file
// gets (setup-answers.ts FIELDS). The result goes through checkAnswers like a file would, so the
// cross checks (pools of testers, files) are the same too; a failed cross check asks again.
import * as p from '@clack/prompts';
import { isPksError, pksError } from '../errors.js';
import { FIELDS, checkAnswers, cidrOk, fieldError, ipv4Ok, type SetupAnswers } from './setup-answers.js';

type Schema = Parameters<typeof fieldError>[0];

function cancelled<T>(v: T | symbol): T {
  if (p.isCancel(v)) {
    p.cancel('setup cancelled: nothing was changed');
    throw pksError('PKS_SETUP_ANSWERS', 'setup cancelled at the prompt');
  }
  return v as T;
}

/** A text answer: empty takes the default; `parse` turns it into the value the rule checks. */
async function ask<T = string>(message: string, schema: Schema, o: { dflt?: string; parse?: (s: string) => T; extra?: (v: T) => string | undefined } = {}): Promise<T> {
  const parse = o.parse ?? ((s: string) => s as unknown as T);
  const v = await p.text({
    message,
    ...(o.dflt !== undefined ? { placeholder: o.dflt, defaultValue: o.dflt } : {}),
    validate: (raw) => {
      const s = (raw ?? '').trim() || o.dflt || '';
      if (!s) return 'an answer is needed';
      const value = parse(s);
      return fieldError(schema, value, 'invalid') ?? o.extra?.(value);
    },
  });
  return parse((cancelled(v) as string).trim() || o.dflt || '');
}

const list = (s: string): string[] =>
  s
    .split(/[,\s]+/)
    .map((x) => x.trim())
    .filter(Boolean);
const int = (s: string): number => (/^\d{1,10}$/.test(s) ? Number(s) : NaN);

/** An optional path: empty means none. */
async function askOptionalPath(message: string): Promise<string | undefined> {
  const v = await p.text({ message: `${message} (empty: none)`, validate: (raw) => ((raw ?? '').trim() ? fieldError(FIELDS.path, (raw ?? '').trim(), 'invalid') : undefined) });
  return (cancelled(v) as string | undefined)?.trim() || undefined;
}

async function askList(message: string, item: Schema, o: { dflt?: string; min?: number } = {}): Promise<string[]> {
  return ask(message, { type: 'array', minItems: o.min ?? 1, maxItems: 50, items: item }, { ...(o.dflt !== undefined ? { dflt: o.dflt } : {}), parse: list });
}

async function askPools(): Promise<SetupAnswers['pools']> {
  // "pool:minimum:reorder" entries: one line for a handful of pools
  const parse = (s: string): SetupAnswers['pools'] =>
    list(s).map((e) => {
      const [pool, minimum, reorder] = e.split(':');
      return { pool: pool ?? '', minimum: int(minimum ?? '100'), reorder: int(reorder ?? '500') };
    });
  return ask('Pools (OEM.TYPE.SLOT[:minimum:re-order], comma separated)', { type: 'array', minItems: 1, items: { type: 'object', properties: { pool: FIELDS.pool, minimum: FIELDS.count, reorder: { ...FIELDS.count, minimum: 1 } } } }, { parse });
}

export async function promptAnswers(): Promise<SetupAnswers> {
  p.intro('PKS setup');
  for (;;) {
    const plant = await ask('Plant name', FIELDS.name);
    const box = await ask('Box name', FIELDS.name);
    const mode = cancelled(await p.select({ message: 'Plant network', options: [{ value: 'dhcp', label: 'DHCP' }, { value: 'static', label: 'static address' }] })) as 'dhcp' | 'static';
    const network: SetupAnswers['network'] = { interface: await ask('Plant interface', FIELDS.ifname, { dflt: 'eth0' }), mode };
    if (mode === 'static') {
      network.address = await ask('Address/prefix', FIELDS.cidr4, { extra: (v: string) => (cidrOk(v) ? undefined : 'not an IPv4 address/prefix') });
      network.gateway = await ask('Gateway', FIELDS.ipv4, { extra: (v: string) => (ipv4Ok(v) ? undefined : 'not an IPv4 address') });
      network.dns = await askList('DNS servers', FIELDS.ipv4, { dflt: network.gateway });
    }
    if (cancelled(await p.confirm({ message: 'A VLAN for the tester network?', initialValue: true }))) {
      network.testerVlan = {
        id: await ask('Tester VLAN id', FIELDS.vlan, { dflt: '100', parse: int }),
        name: 'pks-tester',
        address: await ask('Tester network address/prefix', FIELDS.cidr4, { extra: (v: string) => (cidrOk(v) ? undefined : 'not an IPv4 address/prefix') }),
      };
    }
    const ntp = await askList('NTP servers', FIELDS.host);
    const tpm = {
      tcti: await ask('TPM (TCTI)', FIELDS.tcti, { dflt: 'device:/dev/tpmrm0' }),
      pcrSigningKey: await ask('Image PCR signing public key', FIELDS.path, { dflt: '/usr/lib/pks-image/pcr-signing.pem' }),
      signedPolicy: await ask('Signed PCR 11 policies', FIELDS.path, { dflt: '/usr/lib/pks-image/pcr11-policy.json' }),
    };
    const module = await ask('PKCS#11 module', FIELDS.path, { dflt: '/usr/lib/softhsm/libsofthsm2.so' });
    const tokenLabel = await ask('Token label', FIELDS.label, { dflt: `pks-${box}`.slice(0, 32) });
    const hsmMode = cancelled(await p.select({ message: 'HSM token', options: [{ value: 'new', label: 'initialise a new token (PINs made here, sealed to the TPM)' }, { value: 'join', label: 'join an existing token (PIN from a file)' }] })) as 'new' | 'join';
    const softhsm2Conf = await askOptionalPath('SoftHSM config file');
    const hsm: SetupAnswers['hsm'] = { module, tokenLabel, mode: hsmMode, ...(softhsm2Conf ? { softhsm2Conf } : {}) };
    if (hsmMode === 'join') hsm.pinFile = await ask('File with the token user PIN (removed once sealed)', FIELDS.path);
    const kms: SetupAnswers['kms'] = {
      enrolSocket: await ask('KMS enrolment socket', FIELDS.path),
      caFile: await ask('KMS CA certificate (PEM file)', FIELDS.path),
      broker: {
        host: await ask('MQTT broker host', FIELDS.host),
        port: await ask('MQTT broker port', FIELDS.port, { dflt: '8883', parse: int }),
        caFile: await ask('MQTT broker CA certificate (PEM file)', FIELDS.path),
      },
    };
    const smtp: SetupAnswers['smtp'] = {
      host: await ask('SMTP relay', FIELDS.host),
      port: await ask('SMTP port', FIELDS.port, { dflt: '25', parse: int }),
      starttls: cancelled(await p.select({ message: 'STARTTLS', options: [{ value: 'required', label: 'required' }, { value: 'opportunistic', label: 'when offered' }, { value: 'off', label: 'off (plaintext relay)' }] })) as SetupAnswers['smtp']['starttls'],
      from: await ask('Sender address', FIELDS.mail, { dflt: `pks-${box}@plant.example` }),
      to: await askList('Alert recipients', FIELDS.mail),
    };
    const caFile = await askOptionalPath('CA of the SMTP relay (PEM file)');
    if (caFile) smtp.caFile = caFile;
    const ca = await ask('Tester CA certificate (PEM file)', FIELDS.path);
    const pools = await askPools();
    const first: SetupAnswers['testers']['first'] = [];
    while (cancelled(await p.confirm({ message: first.length ? 'Another tester?' : 'Register a first tester?', initialValue: false }))) {
      first.push({
        cn: await ask('Tester certificate CN', FIELDS.name),
        station: await ask('Station', FIELDS.name),
        pools: await askList('Pools for it', FIELDS.pool, { dflt: pools.map((x) => x.pool).join(',') }),
        expires: await ask('Grant until (ISO date)', FIELDS.date, { dflt: new Date(Date.now() + 365 * 86_400_000).toISOString().slice(0, 10) + 'T00:00:00Z' }),
      });
    }
    const quotas = {
      openPerTester: await ask('Open reservations per tester', { type: 'integer', minimum: 1, maximum: 10_000 }, { dflt: '8', parse: int }),
      testerPerHour: await ask('New keys per hour per tester', { type: 'integer', minimum: 1, maximum: 1_000_000 }, { dflt: '500', parse: int }),
      poolPerHour: await ask('New keys per hour per pool', { type: 'integer', minimum: 1, maximum: 10_000_000 }, { dflt: '20000', parse: int }),
    };
    const raw = { v: 1, plant, box, network, time: { ntp }, tpm, hsm, kms, smtp, testers: { ca, first }, pools, quotas };
    try {
      const a = checkAnswers(raw);
      if (cancelled(await p.confirm({ message: `Set up box ${a.box} in plant ${a.plant} now?`, initialValue: true }))) return a;
      throw pksError('PKS_SETUP_ANSWERS', 'setup not confirmed: nothing was changed');
    } catch (e) {
      if (!isPksError(e) || e.detail.startsWith('setup ')) throw e;
      // a cross check failed (a file, a tester's pool): say which, and ask again
      p.log.error(`${e.code}: ${e.detail}`);
    }
  }
}
