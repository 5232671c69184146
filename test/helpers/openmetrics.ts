// A strict reader of the OpenMetrics text format for the scrape tests (issue 16 §4): families
// announced by TYPE/HELP before their samples, label values unescaped, one # EOF at the end.
import * as assert from 'uvu/assert';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
export interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

/** A strict reader of the OpenMetrics text format: TYPE/HELP before samples, one # EOF at the end. */
export function parseOpenMetrics(text: string): Map<string, Family> {
  const lines = text.split('\n');
  assert.is(lines.at(-1), '', 'ends with a newline');
  assert.is(lines.at(-2), '# EOF', 'last line # EOF');
  const fams = new Map<string, Family>();
  let current: string | undefined;
  for (const line of lines.slice(0, -2)) {
    let m = /^# (TYPE|HELP|UNIT) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$/.exec(line);
    if (m) {
      const f = fams.get(m[2]!) ?? { type: '', help: '', samples: [] };
      if (m[1] === 'TYPE') f.type = m[3]!;
      if (m[1] === 'HELP') f.help = m[3]!;
      fams.set(m[2]!, f);
      current = m[2]!;
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \S+)?$/.exec(line);
    if (!m) throw new Error(`not an OpenMetrics line: ${line}`);
    const [, name, lab, v] = m;
    assert.ok(current && name!.startsWith(current), `${name} belongs to the family above it (${current})`);
    const labels: Record<string, string> = {};
    for (const l of (lab ?? '').match(/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g) ?? []) {
      const i = l.indexOf('=');
      labels[l.slice(0, i)] = JSON.parse(l.slice(i + 1)) as string;
    }
    const value = v === '+Inf' ? Infinity : Number(v);
    assert.ok(!Number.isNaN(value), `a number: ${line}`);
    fams.get(current!)!.samples.push({ name: name!, labels, value });
  }
  return fams;
}

