// The latency–throughput curve as a small self-contained SVG: p50 and p99 against the
// throughput achieved, one point per open-loop rate, plus the closed-loop points for reference.

export interface CurvePoint {
  label: string;
  perS: number;
  p50: number;
  p99: number;
}

export function curveSvg(title: string, open: CurvePoint[], closed: CurvePoint[]): string {
  const W = 720;
  const H = 420;
  const m = { l: 70, r: 30, t: 40, b: 60 };
  const all = [...open, ...closed];
  const xMax = niceCeil(Math.max(1, ...all.map((p) => p.perS)) * 1.1);
  const yMax = niceCeil(Math.max(1, ...all.map((p) => p.p99).filter(Number.isFinite)) * 1.1);
  const x = (v: number): number => m.l + (v / xMax) * (W - m.l - m.r);
  const y = (v: number): number => H - m.b - (Math.min(v, yMax) / yMax) * (H - m.t - m.b);
  const esc = (s: string): string => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
  const line = (pts: CurvePoint[], k: 'p50' | 'p99', color: string): string =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.map((p) => `${x(p.perS).toFixed(1)},${y(p[k]).toFixed(1)}`).join(' ')}"/>` +
    pts.map((p) => `<circle cx="${x(p.perS).toFixed(1)}" cy="${y(p[k]).toFixed(1)}" r="4" fill="${color}"><title>${esc(`${p.label}: ${p.perS.toFixed(0)}/s, ${k} ${p[k].toFixed(1)} ms`)}</title></circle>`).join('');
  const ticks = (max: number, n: number): number[] => Array.from({ length: n + 1 }, (_, i) => (max * i) / n);
  const grid =
    ticks(xMax, 5).map((v) => `<line x1="${x(v)}" y1="${H - m.b}" x2="${x(v)}" y2="${m.t}" stroke="#eee"/><text x="${x(v)}" y="${H - m.b + 18}" text-anchor="middle">${v.toFixed(0)}</text>`).join('') +
    ticks(yMax, 5).map((v) => `<line x1="${m.l}" y1="${y(v)}" x2="${W - m.r}" y2="${y(v)}" stroke="#eee"/><text x="${m.l - 8}" y="${y(v) + 4}" text-anchor="end">${v.toFixed(v < 10 ? 1 : 0)}</text>`).join('');
  const labels = open.map((p) => `<text x="${x(p.perS) + 6}" y="${y(p.p99) - 6}" fill="#b00">${esc(p.label)}</text>`).join('');
  const closedMarks = closed
    .map((p) => `<rect x="${x(p.perS) - 4}" y="${y(p.p99) - 4}" width="8" height="8" fill="none" stroke="#555"/><text x="${x(p.perS) - 8}" y="${y(p.p99) - 8}" text-anchor="end" fill="#555">${esc(p.label)} p99</text>`)
    .join('');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="${W / 2}" y="22" text-anchor="middle" font-size="15">${esc(title)}</text>
${grid}
<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="#000"/><line x1="${m.l}" y1="${H - m.b}" x2="${m.l}" y2="${m.t}" stroke="#000"/>
<text x="${W / 2}" y="${H - 18}" text-anchor="middle">confirmed injections/s (open loop: arrivals at a fixed rate)</text>
<text transform="translate(18 ${H / 2}) rotate(-90)" text-anchor="middle">latency, ms</text>
${line(open, 'p50', '#06c')}${line(open, 'p99', '#b00')}${labels}${closedMarks}
<text x="${W - m.r - 150}" y="${m.t + 10}" fill="#06c">● p50</text><text x="${W - m.r - 100}" y="${m.t + 10}" fill="#b00">● p99</text><text x="${W - m.r - 50}" y="${m.t + 10}" fill="#555">□ closed</text>
</svg>
`;
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const f of [1, 2, 2.5, 5, 10]) if (f * p >= v) return f * p;
  return 10 * p;
}
