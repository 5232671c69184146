// The durable step journal of `pksctl setup`: which steps are done, with what result, and the
// answers they were done with. Written through the durable write (temp file, fsync, rename,
// directory fsync) before and after each step, so a setup cut by kill -9 or a power loss
// resumes at the first step not marked done, with the answers it started with (an interactive
// run cut half way is not asked again). Each step is itself idempotent, so a step cut between
// its work and its `done` mark is simply run again.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFileDurably } from '../durable-file.js';
import { pksError } from '../errors.js';
import type { SetupAnswers } from './setup-answers.js';

export interface StepRecord {
  startedAt: string;
  doneAt?: string;
  /** what the step did, for the summary (never a secret) */
  result?: Record<string, unknown>;
  runs: number;
}

interface JournalFile {
  v: 1;
  answersDigest: string;
  answers: SetupAnswers;
  steps: Record<string, StepRecord>;
  finishedAt?: string;
}

/** Canonical JSON: keys sorted, so the digest does not depend on the order of a file's keys. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

export const answersDigest = (a: SetupAnswers): string => createHash('sha256').update(canonical(a)).digest('hex');

export class SetupJournal {
  private constructor(
    readonly file: string,
    private state: JournalFile,
  ) {}

  /** The journal at `file`, or null when setup never started there. */
  static read(file: string): JournalFile | null {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return null;
    }
    try {
      const j = JSON.parse(text) as JournalFile;
      if (j.v !== 1 || typeof j.answersDigest !== 'string' || typeof j.steps !== 'object') throw new Error('shape');
      return j;
    } catch {
      // the durable write never leaves a torn file: a bad one was edited by hand
      throw pksError('PKS_SETUP_RESUME', `setup journal ${file} is unreadable; move it away to start setup anew`);
    }
  }

  /** Opens (or starts) the journal for these answers; other answers than a started journal's are refused. */
  static open(file: string, answers: SetupAnswers): SetupJournal {
    const digest = answersDigest(answers);
    const old = SetupJournal.read(file);
    if (old && old.answersDigest !== digest)
      throw pksError('PKS_SETUP_RESUME', `setup journal ${file} was started with other answers (run without --answers to resume, or move the journal away to start anew)`);
    const j = new SetupJournal(file, old ?? { v: 1, answersDigest: digest, answers, steps: {} });
    if (!old) j.save();
    return j;
  }

  get answers(): SetupAnswers {
    return this.state.answers;
  }

  done(step: string): StepRecord | undefined {
    const s = this.state.steps[step];
    return s?.doneAt ? s : undefined;
  }

  get finished(): boolean {
    return Boolean(this.state.finishedAt);
  }

  steps(): Readonly<Record<string, StepRecord>> {
    return this.state.steps;
  }

  start(step: string): void {
    const prev = this.state.steps[step];
    this.state.steps[step] = { startedAt: new Date().toISOString(), runs: (prev?.runs ?? 0) + 1 };
    this.save();
  }

  finish(step: string, result: Record<string, unknown>): void {
    const s = this.state.steps[step]!;
    s.doneAt = new Date().toISOString();
    s.result = result;
    this.save();
  }

  finishAll(): void {
    this.state.finishedAt = new Date().toISOString();
    this.save();
  }

  private save(): void {
    mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
    writeFileDurably(this.file, JSON.stringify(this.state, null, 1) + '\n', 0o600);
  }
}
