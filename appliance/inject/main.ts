// pks-inject: the tester station's injector. Gets each ECU's SHE package from the box over
// mTLS, injects it over DoIP (TCP 13400 or TLS 3496) or ISO-TP on CAN, reads the proof and
// confirms it with the box. Progress on stderr, one JSON result per ECU on stdout, and a last
// summary line; exit 0 only when every ECU is confirmed.
//
//   pks-inject --box https://pks.local:8443 --ca box-ca.crt --cert tester.crt --key tester.key \
//     --pool oem1.bcm.key4 --doip 192.0.2.10[:13400] [--doip-tls --doip-ca CA] \
//     --target 0x1001[,0x1002...] [--source 0x0e80] [--mapping FILE] [--secrets FILE] [--json]
//   pks-inject ... --can vcan0 --tx 0x7e0 --rx 0x7e8 [--fd]
//   pks-inject --box box-plant1-01=https://pks1:8443,box-plant1-02=https://pks2:8443 ...  (a cluster:
//     the next box on a connection failure or a 503; see appliance/inject/cluster.ts)
//
// --secrets: JSON {"<type>/<level>": "<32 hex>"}, the SecurityAccess secrets of the station;
// without it the plant-in-a-box dev secrets are used (never on a real line).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DoipClient } from '../doip/client.js';
import { DOIP_TCP_PORT, DOIP_TLS_PORT } from '../doip/codec.js';
import { asPksError, pksError } from '../errors.js';
import { parseHex } from '../she.js';
import { DEFAULT_MAPPING, devSecuritySecret, loadMapping } from '../uds/mapping.js';
import type { UdsLink } from '../uds/client.js';
import { boxClient } from './box.js';
import { clusterClient } from './cluster.js';
import { injectEcu, type EcuResult } from './inject.js';

const { values } = parseArgs({
  options: {
    box: { type: 'string' },
    ca: { type: 'string' },
    cert: { type: 'string' },
    key: { type: 'string' },
    pool: { type: 'string' },
    doip: { type: 'string' },
    'doip-tls': { type: 'boolean' },
    'doip-ca': { type: 'string' },
    target: { type: 'string' },
    source: { type: 'string', default: '0x0e80' },
    can: { type: 'string' },
    tx: { type: 'string' },
    rx: { type: 'string' },
    fd: { type: 'boolean' },
    uid: { type: 'string' },
    mapping: { type: 'string' },
    secrets: { type: 'string' },
    attempts: { type: 'string', default: '3' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

const usage = (msg?: string): never => {
  if (msg) process.stderr.write(`pks-inject: ${msg}\n`);
  process.stderr.write('usage: pks-inject --box URL --ca FILE --cert FILE --key FILE --pool POOL (--doip HOST[:PORT] --target ADDR[,ADDR...] | --can IFACE --tx ID --rx ID) [--doip-tls --doip-ca FILE] [--mapping FILE] [--secrets FILE] [--uid HEX30] [--json]\n');
  process.exit(2);
};
if (values.help) usage();
const need = (k: 'box' | 'ca' | 'cert' | 'key' | 'pool'): string => values[k] ?? usage(`--${k} is required`);
const num = (s: string, what: string, max: number): number => {
  const n = /^0x[0-9a-f]+$/i.test(s) ? parseInt(s, 16) : /^[0-9]+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 0 || n > max) usage(`${what}: '${s}' is not a number in 0..0x${max.toString(16)}`);
  return n;
};
const say = (s: string): void => void process.stderr.write(s + '\n');

async function main(): Promise<number> {
  const mapping = values.mapping ? loadMapping(values.mapping) : DEFAULT_MAPPING;
  const secrets: Record<string, string> = values.secrets ? (JSON.parse(readFileSync(values.secrets, 'utf8')) as Record<string, string>) : {};
  const securitySecret = (type: string, level: number): Buffer => {
    const s = secrets[`${type}/${level}`];
    if (s !== undefined) return parseHex(s, 16, `secrets ${type}/${level}`);
    if (values.secrets) throw pksError('PKS_UDS_MAPPING_INVALID', `no SecurityAccess secret for ${type}/${level} in ${values.secrets}`);
    return devSecuritySecret(type, level);
  };
  const tls = { ca: readFileSync(need('ca'), 'utf8'), cert: readFileSync(need('cert'), 'utf8'), key: readFileSync(need('key'), 'utf8') };
  // --box URL, or the boxes of a plant as ID=URL,ID=URL: fail-over in that order (cluster.ts)
  const spec = need('box');
  const members = spec.split(',').map((m) => /^([A-Za-z0-9][A-Za-z0-9._-]{0,63})=(https:\/\/\S+)$/.exec(m));
  const box = spec.includes('=')
    ? members.every((m) => m)
      ? clusterClient(members.map((m) => ({ boxId: m![1]!, url: m![2]!, ...tls })), { onFailover: (from, to, why) => process.stderr.write(`pks-inject: box ${from} failed (${why}); moving to ${to}\n`) })
      : usage('--box: URL or ID=URL,ID=URL')
    : boxClient({ url: spec, ...tls });
  const pool = need('pool');
  const uid = values.uid ? parseHex(values.uid, 15, '--uid') : undefined;
  const results: EcuResult[] = [];
  const links: { name: string; link: UdsLink; close(): void }[] = [];
  try {
    if (values.doip) {
      const [host, p] = values.doip.split(/:(?=\d+$)/);
      const port = p ? num(p, '--doip port', 0xffff) : values['doip-tls'] ? DOIP_TLS_PORT : DOIP_TCP_PORT;
      const client = await DoipClient.connect({
        host: host!,
        port,
        sourceAddress: num(values.source!, '--source', 0xffff),
        ...(values['doip-tls'] ? { tls: { ca: readFileSync(values['doip-ca'] ?? usage('--doip-tls needs --doip-ca'), 'utf8') } } : {}),
      });
      const ea = await client.activate();
      say(`doip: ${host}:${port}${values['doip-tls'] ? ' (TLS)' : ''} routing active, entity 0x${ea.toString(16).padStart(4, '0')}`);
      const targets = (values.target ?? usage('--doip needs --target')).split(',').map((t) => num(t.trim(), '--target', 0xffff));
      for (const t of targets) links.push({ name: `0x${t.toString(16).padStart(4, '0')}`, link: client.link(t), close: () => {} });
      links.push({ name: '', link: client.link(0), close: () => client.close() });
    } else if (values.can) {
      const { canLink } = await import('../isotp/can-link.js');
      const l = await canLink({ iface: values.can, tx: num(values.tx ?? usage('--can needs --tx'), '--tx', 0x1fffffff), rx: num(values.rx ?? usage('--can needs --rx'), '--rx', 0x1fffffff), fd: !!values.fd });
      links.push({ name: `${values.can}:${values.tx}`, link: l.link, close: () => l.close() });
    } else usage('give --doip or --can');
    for (const l of links) {
      if (!l.name) continue;
      const r = await injectEcu({
        box,
        link: l.link,
        pool,
        mapping,
        securitySecret,
        attempts: num(values.attempts!, '--attempts', 10),
        ...(uid ? { uid } : {}),
        progress: (step, detail) => {
          if (!values.json) say(`  ${l.name} ${step}${detail ? `: ${detail}` : ''}`);
        },
      });
      results.push(r);
      say(r.ok ? `ECU ${l.name} uid ${r.uid}: INJECTED, proof ${r.verified ? 'verified' : 'not verified'} (${r.ms.toFixed(0)} ms, attempt ${r.attempts})` : `ECU ${l.name} uid ${r.uid ?? '?'}: FAILED ${r.error?.code}: ${r.error?.detail}`);
      process.stdout.write(JSON.stringify({ ecu: l.name, ...r }) + '\n');
    }
  } finally {
    for (const l of links) l.close();
    await box.close();
  }
  const ok = results.filter((r) => r.ok).length;
  process.stdout.write(JSON.stringify({ ecus: results.length, injected: ok, failed: results.length - ok, burned: results.reduce((a, r) => a + r.burned, 0) }) + '\n');
  return ok === results.length && results.length > 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e) => {
    const p = asPksError(e);
    process.stderr.write(`pks-inject: ${p.code}: ${p.detail}\n`);
    process.exit(1);
  },
);
