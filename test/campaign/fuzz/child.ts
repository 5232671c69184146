// One fuzz target in its own process, so that a parser stuck in a loop cannot stop the campaign:
// the parent (fuzz/run.ts) hears a heartbeat at least every second and kills a silent child as a
// hang. argv: target, inputs, seconds, seed. Answers one message { result } (or { error }).
import { fuzzTarget } from './engine.js';
import { targetNamed } from './targets.js';

const send = (m: unknown): void => void process.send?.(m);

async function main(name: string, inputs: number, seconds: number, seed: number): Promise<void> {
  const beat = setInterval(() => send({ alive: true }), 1000);
  beat.unref();
  try {
    send({ result: await fuzzTarget(targetNamed(name), { inputs, seconds, seed, beat: (i) => send({ inputs: i }) }) });
  } catch (e) {
    send({ error: (e as Error).stack ?? String(e) });
  }
  clearInterval(beat);
  process.disconnect?.();
  process.exit(0);
}

const [name, inputs, seconds, seed] = process.argv.slice(2);
// only as a forked child: a test runner that imports every file under test/ must not start it
if (process.send && name) await main(name, Number(inputs), Number(seconds), Number(seed));
