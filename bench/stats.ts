/** Percentiles and a fixed-width table: benchmarks print, they never assert. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export interface Row {
  name: string;
  samples: number[];
}

export function table(rows: Row[], baseline?: string): string {
  const base = rows.find((r) => r.name === baseline);
  const head = ['', 'n', 'p50 ms', 'p99 ms', 'max ms', ...(base ? ['p50 ÷ floor', 'p99 ÷ floor'] : [])];
  const lines = rows.map((r) => {
    const s = [...r.samples].sort((a, b) => a - b);
    const cols = [r.name, String(s.length), fmt(percentile(s, 50)), fmt(percentile(s, 99)), fmt(s.at(-1) ?? NaN)];
    if (base) {
      const b = [...base.samples].sort((a, b2) => a - b2);
      cols.push(`${(percentile(s, 50) / percentile(b, 50)).toFixed(1)}×`, `${(percentile(s, 99) / percentile(b, 99)).toFixed(1)}×`);
    }
    return cols;
  });
  const all = [head, ...lines];
  const widths = head.map((_, i) => Math.max(...all.map((l) => l[i]!.length)));
  return all.map((l) => l.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

function fmt(n: number): string {
  return n.toFixed(2);
}
