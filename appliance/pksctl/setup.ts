// pksctl setup (issue 16): plant IT's one-time setup of the box, interactive or from an answer
// file, as journaled steps (setup-steps.ts). Answers are checked in full before anything is
// written; a run cut at any point (kill -9, power loss) is resumed by running setup again, with
// the answers of the journal. At the end: a summary and `pksctl status`.
//   pksctl setup [--answers FILE] [--root DIR] [--no-status]
import path from 'node:path';
import { parseArgs } from 'node:util';
import { pksError } from '../errors.js';
import { runDir } from '../paths.js';
import { checkAnswers, readAnswersFile, type SetupAnswers } from './setup-answers.js';
import { SetupJournal, type StepRecord } from './setup-journal.js';
import { STEPS, stepFailure, type StepContext } from './setup-steps.js';

const USAGE = 'usage: pksctl setup [--answers FILE] [--root DIR] [--no-status]';

export const journalPath = (root: string): string => path.join(root, 'var/lib/pks/setup/journal.json');

/** PKS_SETUP_TEST_PAUSE=<point>: stop there until killed (how the tests cut a setup with kill -9). */
async function pause(point: string): Promise<void> {
  if (process.env.PKS_SETUP_TEST_PAUSE !== point) return;
  process.stderr.write(`pksctl setup: paused at ${point}\n`);
  await new Promise(() => setInterval(() => undefined, 1 << 30));
}

function renderResult(r: Record<string, unknown>): string[] {
  return Object.entries(r).map(([k, v]) => `    ${k}: ${Array.isArray(v) ? v.join(', ') : typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v)}`);
}

export function renderSummary(answers: SetupAnswers, steps: Readonly<Record<string, StepRecord>>): string {
  const lines = [`setup of box ${answers.box} in plant ${answers.plant}: done`];
  for (const s of STEPS) {
    const r = steps[s.name];
    lines.push(`  ${r?.doneAt ? 'ok' : '--'} ${s.title}${r && r.runs > 1 ? ` (resumed, ${r.runs} runs)` : ''}`);
    if (r?.result) lines.push(...renderResult(r.result));
  }
  return lines.join('\n');
}

export async function setupCommand(argv: string[], out: (s: string) => void): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { answers: { type: 'string' }, root: { type: 'string' }, 'no-status': { type: 'boolean' } }, strict: true }));
  } catch {
    throw pksError('PKS_BAD_REQUEST', USAGE);
  }
  const root = path.resolve(values.root ?? '/');
  const file = journalPath(root);
  const old = SetupJournal.read(file);
  let answers: SetupAnswers;
  if (values.answers) answers = readAnswersFile(values.answers);
  else if (old) {
    // resume (or show) with the journal's answers, checked again: its files may have gone since
    answers = checkAnswers(old.answers);
    out(old.finishedAt ? `box already set up (${file})` : `resuming the setup started with the answers in ${file}`);
  } else {
    if (!process.stdin.isTTY) throw pksError('PKS_SETUP_ANSWERS', `no terminal for the prompts: give --answers FILE\n${USAGE}`);
    answers = await (await import('./setup-prompts.js')).promptAnswers();
  }
  const journal = SetupJournal.open(file, answers);
  const ctx: StepContext = { answers, root, runDir: runDir(), pause };
  for (const s of STEPS) {
    if (journal.done(s.name)) {
      out(`ok ${s.title} (done before)`);
      continue;
    }
    await pause(`before:${s.name}`);
    journal.start(s.name);
    out(`.. ${s.title}`);
    let result: Record<string, unknown>;
    try {
      result = await s.run(ctx);
    } catch (e) {
      throw stepFailure(s.name, e);
    }
    journal.finish(s.name, result);
    out(`ok ${s.title}`);
  }
  if (!journal.finished) journal.finishAll();
  out('');
  out(renderSummary(answers, journal.steps()));
  if (!values['no-status']) {
    out('');
    out('pksctl status:');
    try {
      const { statusCommand } = await import('./status.js');
      const code = await statusCommand(['--tcti', answers.tpm.tcti], out);
      if (code !== 0) out('measured boot is not all green: see the problems above (pksctl status)');
    } catch (e) {
      const x = e as { code?: string; detail?: string; message?: string };
      out(`status: ${x.code ?? 'error'}: ${x.detail ?? x.message ?? ''}`);
    }
  }
  return 0;
}
