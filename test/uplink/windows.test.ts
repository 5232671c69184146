// Sync windows: an uplink in `windows` mode (node-cron, 6-field expression with seconds: a
// window every 2 s, open 1 s) connects only inside its windows, delivers its outbox in one,
// stays off the broker in between, and the signed set-schedule command switches it to
// `always` and back at run time (the command waits in the box's persistent session until the
// next window opens).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { waitFor } from '../../scripts/plant/process.js';
import { startRig, type Rig } from './rig.js';

const EVERY_2S = '*/2 * * * * *';
let rig: Rig;

test.before(async () => {
  rig = await startRig({ name: 'windows', schedule: { mode: 'windows', cron: EVERY_2S, windowSeconds: 1 } });
});

test.after(async () => {
  await rig?.stop();
});

test.after.each(() => {
  if (process.env.PKS_DEBUG_LINK) console.error(rig.logs.join('\n'));
  rig.logs.length = 0;
});

interface Period {
  connected: boolean;
  ms: number;
}

/** Samples `connected` every 25 ms for `ms`; the runs of equal state, in order. */
async function watch(ms: number): Promise<Period[]> {
  const out: Period[] = [];
  const end = Date.now() + ms;
  let state = rig.uplink.connected;
  let since = Date.now();
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, 25));
    const now = rig.uplink.connected;
    if (now !== state) {
      out.push({ connected: state, ms: Date.now() - since });
      state = now;
      since = Date.now();
    }
  }
  out.push({ connected: state, ms: Date.now() - since });
  return out;
}

test('connects only inside its windows and stays off the broker in between', async () => {
  // at start the box stays off the broker until the first window opens
  assert.not.ok(rig.linkOpenAtStart, 'start() in windows mode opened no connection');
  const periods = await watch(5500);
  if (process.env.PKS_DEBUG_WINDOWS) console.error(JSON.stringify(periods));
  const on = periods.slice(1, -1).filter((p) => p.connected);
  const off = periods.slice(1, -1).filter((p) => !p.connected);
  assert.ok(on.length >= 2, `windows seen: ${JSON.stringify(periods)}`);
  // a 1 s window (plus the TLS handshake and the goodbye) and never longer
  for (const p of on) assert.ok(p.ms >= 500 && p.ms <= 1600, `window of ${p.ms} ms`);
  // between windows: off for roughly the rest of the 2 s period
  for (const p of off) assert.ok(p.ms >= 300, `gap of ${p.ms} ms`);
});

test('the outbox waits for a window and is delivered in it', async () => {
  await waitFor('between windows', async () => !rig.uplink.connected, 3000, 10);
  await rig.ksClient.call('outbox-put', { kind: 'event', body: { type: 'window-test', n: 1 } });
  assert.is(rig.stub.outbox.length, 1, 'waits in the outbox while off the broker');
  const t0 = Date.now();
  await waitFor('delivered', async () => rig.stub.outbox.length === 0, 5000, 10);
  assert.ok(Date.now() - t0 <= 3000, 'delivered in the next window');
  const box = await rig.kms.fleet.call<{ events: Array<{ type?: string }>; lastSeen: string }>('box', { boxId: rig.boxId });
  assert.ok(box.events.some((e) => e.type === 'window-test'));
  assert.ok(rig.uplink.state.state.lastSync);
});

test('set-schedule switches to always and back to windows at run time', async () => {
  await waitFor('between windows', async () => !rig.uplink.connected, 3000, 10);
  // sent while the box is away: the broker keeps it for the box's session
  const seq = await rig.command('set-schedule', { mode: 'always' });
  await waitFor('always mode', async () => rig.uplink.schedule.mode === 'always', 5000, 10);
  assert.is(rig.uplink.state.state.lastSeq, seq);
  await waitFor('connected', async () => rig.uplink.connected, 3000, 10);
  const steady = await watch(2500);
  assert.equal(steady.map((p) => p.connected), [true], `stays connected: ${JSON.stringify(steady)}`);

  await rig.command('set-schedule', { mode: 'windows', cron: EVERY_2S, windowSeconds: 1 });
  await waitFor('windows mode', async () => rig.uplink.schedule.mode === 'windows', 3000, 10);
  await waitFor('off the broker', async () => !rig.uplink.connected, 2000, 10);
  const periods = await watch(4200);
  assert.ok(periods.some((p) => p.connected) && periods.some((p) => !p.connected), JSON.stringify(periods));
  for (const p of periods.slice(1, -1).filter((x) => x.connected)) assert.ok(p.ms <= 1600, `window of ${p.ms} ms`);
  // the schedule set by ops survives a restart
  assert.equal(rig.uplink.state.state.schedule, { mode: 'windows', cron: EVERY_2S, windowSeconds: 1 });
});

test.run();
