// pksctl zeroize: decommissioning a box (issue 16 §3). After a confirmation (the box name typed
// back, or --yes for scripts), in this order:
//   1. final-sync: a zeroize-begin event and a last audit checkpoint go to the KMS with every
//      record still in the outbox (the uplink's final-sync); refused (PKS_ZEROIZE_REFUSED,
//      nothing changed) while the KMS link is down or does not acknowledge, unless --force;
//   2. hsm: the vault destroys every key object on the box's token (its `zeroize` verb, which
//      checks the box named is its own) and leaves a marker so no key hierarchy is made again;
//   3. wipe: the keystore closes and removes its LMDB files and stops; the data dir and the
//      credentials (sealed PINs, MQTT identity) are removed;
//   4. report: the uplink tells the KMS (event `zeroized` with the nonce of step 1, which the KMS
//      has in the audit-signed file); the KMS revokes the box's certificates and the broker
//      reloads its CRL.
// Every step is idempotent and recorded in a journal (written durably after each): a kill -9
// anywhere is safe, the same command again resumes with the same nonce.
//   pksctl zeroize [--yes] [--force] [--data DIR] [--credentials PATH,...] [--journal FILE] [--timeout S] [--json]
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import { parseArgs } from 'node:util';
import { writeFileDurably } from '../durable-file.js';
import { asPksError, pksError } from '../errors.js';
import { ipcClient } from '../ipc.js';
import { socketPath } from '../paths.js';

const USAGE = 'usage: pksctl zeroize [--yes] [--force] [--data DIR] [--credentials PATH,...] [--journal FILE] [--timeout SECONDS] [--json]';
export const ZEROIZE_STEPS = ['final-sync', 'hsm', 'wipe', 'report'] as const;
type Step = (typeof ZEROIZE_STEPS)[number];

interface Journal {
  boxId: string;
  nonce: string;
  done: Step[];
  forced?: boolean;
}

function readJournal(file: string): Journal | null {
  if (!existsSync(file)) return null;
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as Journal;
    if (typeof j.boxId === 'string' && /^[0-9a-f]{32}$/.test(j.nonce) && Array.isArray(j.done)) return j;
  } catch {
    /* torn or foreign: refused below */
  }
  throw pksError('PKS_STATE_INVALID', `zeroize journal ${file} is unreadable; remove it only if no zeroize ran`);
}

async function confirm(boxId: string, out: (s: string) => void): Promise<void> {
  out(`This destroys every key of box ${boxId} in its HSM and wipes its data and credentials. It cannot be undone.`);
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: false });
  try {
    process.stderr.write(`Type the box name (${boxId}) to zeroize it: `);
    const line = await Promise.race([rl.question(''), new Promise<string>((r) => rl.once('close', () => r('')))]);
    if (line.trim() !== boxId) throw pksError('PKS_ZEROIZE_UNCONFIRMED', 'the name typed is not this box: nothing was done');
  } finally {
    rl.close();
  }
}

async function removeAll(target: string): Promise<string[]> {
  const gone: string[] = [];
  if (!existsSync(target)) return gone;
  for (const f of await readdir(target).catch(() => null) ?? ['']) {
    const p = f ? path.join(target, f) : target;
    await rm(p, { recursive: true, force: true });
    gone.push(p);
  }
  return gone;
}

export async function zeroizeCommand(argv: string[], out: (s: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      yes: { type: 'boolean' },
      force: { type: 'boolean' },
      data: { type: 'string', default: '/var/lib/pks/keystore/data' },
      credentials: { type: 'string', default: '/etc/pks/credentials,/var/lib/pks/uplink' },
      journal: { type: 'string', default: '/var/lib/pks/zeroize.json' },
      timeout: { type: 'string', default: '60' },
      json: { type: 'boolean' },
    },
  });
  if (positionals.length) throw pksError('PKS_BAD_REQUEST', USAGE);
  const timeoutSeconds = Number(values.timeout);
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1 || timeoutSeconds > 3600) throw pksError('PKS_BAD_REQUEST', '--timeout must be 1..3600 seconds');
  const credentials = values.credentials!.split(',').filter(Boolean);
  for (const p of [values.data!, values.journal!, ...credentials]) if (!path.isAbsolute(p) || p === '/') throw pksError('PKS_BAD_REQUEST', `'${p}' must be an absolute path below /`);
  const log = (s: string): void => (values.json ? undefined : out(s));

  const vault = ipcClient(socketPath('vault', 'pksctl'), { timeoutMs: 30_000, connections: 1 });
  const keystore = ipcClient(socketPath('keystore', 'pksctl'), { timeoutMs: 30_000, connections: 1 });
  const uplink = ipcClient(socketPath('uplink', 'pksctl'), { timeoutMs: (timeoutSeconds + 30) * 1000, connections: 1 });
  try {
    let j = readJournal(values.journal!);
    const boxId = j?.boxId ?? (await vault.call<{ boxId: string }>('status')).boxId;
    if (!values.yes) await confirm(boxId, out);
    const uplinkUp = async (): Promise<boolean> => (await uplink.call<{ connected: boolean }>('status').catch(() => ({ connected: false }))).connected;
    if (!j) {
      // nothing is written before this check: a refusal changes nothing
      if (!(await uplinkUp()) && !values.force) throw pksError('PKS_ZEROIZE_REFUSED', 'the KMS link is down: the final checkpoint and verification files cannot be delivered (use --force to zeroize anyway)');
      j = { boxId, nonce: randomBytes(16).toString('hex'), done: [], ...(values.force ? { forced: true } : {}) };
      writeFileDurably(values.journal!, JSON.stringify(j), 0o600);
    }
    const journal = j;
    const mark = (s: Step): void => {
      journal.done.push(s);
      writeFileDurably(values.journal!, JSON.stringify(journal), 0o600);
    };
    const pending = (s: Step): boolean => !journal.done.includes(s);

    if (pending('final-sync')) {
      let drained = false;
      try {
        drained = (await uplink.call<{ drained: boolean }>('final-sync', { nonce: journal.nonce, timeoutSeconds })).drained;
      } catch (err) {
        if (!values.force) throw pksError('PKS_ZEROIZE_REFUSED', `final sync failed: ${asPksError(err).code}: ${asPksError(err).detail}`);
      }
      if (!drained && !values.force) throw pksError('PKS_ZEROIZE_REFUSED', `the KMS did not acknowledge every record within ${timeoutSeconds} s; nothing was destroyed (run again, or --force)`);
      log(drained ? '1/4 final checkpoint and verification files acknowledged by the KMS' : '1/4 final sync INCOMPLETE (--force): records still in the outbox are lost with the box');
      mark('final-sync');
    }
    if (pending('hsm')) {
      const r = await vault.call<{ destroyed: number }>('zeroize', { boxId: journal.boxId, confirm: 'destroy-all-keys' });
      log(`2/4 HSM: ${r.destroyed} key objects destroyed`);
      mark('hsm');
    }
    if (pending('wipe')) {
      // the keystore removes its own files and stops; if it is gone already, the files go here
      await keystore.call('zeroize-wipe', { boxId: journal.boxId }).catch((err: unknown) => {
        const e = asPksError(err);
        if (e.code !== 'PKS_IPC_UNAVAILABLE' && e.code !== 'PKS_SERVICE_UNAVAILABLE') throw e;
      });
      const gone = [...(await removeAll(values.data!))];
      for (const c of credentials) gone.push(...(await removeAll(c)));
      log(`3/4 LMDB and credentials wiped (${gone.length} paths)`);
      mark('wipe');
    }
    if (pending('report')) {
      try {
        await uplink.call('zeroized', { nonce: journal.nonce });
        log('4/4 reported to the KMS: it revokes the box certificate');
        mark('report');
      } catch (err) {
        if (!values.force) throw pksError('PKS_UPLINK_DOWN', `keys and data are gone, but the KMS has not been told yet: run pksctl zeroize again (${asPksError(err).code})`);
        log('4/4 NOT reported (--force, no KMS link): revoke the box at the KMS by hand');
      }
    }
    const res = { boxId: journal.boxId, zeroized: true, steps: journal.done, forced: journal.forced ?? false };
    out(values.json ? JSON.stringify(res) : `box ${journal.boxId} zeroized`);
    return 0;
  } finally {
    await Promise.all([vault.close(), keystore.close(), uplink.close()]);
  }
}
