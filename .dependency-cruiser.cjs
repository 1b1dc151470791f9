/**
 * The layering, written down once and checked in `npm test` (npm run lint:imports).
 * Lowest first; a module may import from its own layer or any layer below it,
 * never from above:
 *
 *   0 base        keyspace.ts, errors.ts, log.ts, glob.ts, version.ts
 *   1 inputs      config/, source/, envelope/, state/ (the daemon's own stateDir)
 *   2 desired/    pure: keys -> desired objects
 *   3 sink/       where desired objects go
 *   4 reconcile/  the one loop (and its events, progress, retries)
 *   5 daemon      reactions/, render/ (templates), metrics.ts, status.ts, heap-pacer.ts, daemon.ts
 *   6 entry       admin/ (library the CLI calls), console/ (the web console), cli/, main.ts
 *
 * Also: no cycles; a CLI verb never imports another verb (only cli/common.ts and
 * cli/index.ts are shared).
 */
const layers = [
  ['base', '^src/(keyspace|errors|log|glob|version)\\.ts$'],
  ['inputs', '^src/(config|source|envelope|state)/'],
  ['desired', '^src/desired/'],
  ['sink', '^src/sink/'],
  ['reconcile', '^src/reconcile/'],
  ['daemon', '^src/(reactions/|render/|metrics\\.ts$|status\\.ts$|heap-pacer\\.ts$|daemon\\.ts$)'],
  ['entry', '^src/(admin/|console/|cli/|main\\.ts$)'],
];

const above = (i) => layers.slice(i + 1).map(([, re]) => `(${re})`).join('|');

module.exports = {
  forbidden: [
    ...layers.slice(0, -1).map(([name, re], i) => ({
      name: `layer-${name}-imports-upward`,
      severity: 'error',
      comment: `${name} may only import from its own layer or below (see .dependency-cruiser.cjs)`,
      from: { path: re },
      to: { path: above(i) },
    })),
    {
      name: 'no-circular',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'cli-verb-imports-verb',
      severity: 'error',
      comment: 'verbs share only cli/common.ts; library code lives below cli/',
      from: { path: '^src/cli/', pathNot: '^src/cli/index\\.ts$' },
      to: { path: '^src/cli/', pathNot: '^src/cli/common\\.ts$' },
    },
    {
      name: 'unlayered-module',
      severity: 'error',
      comment: 'every module under src/ belongs to a layer: add it to the table above',
      from: { path: '^src/', pathNot: layers.map(([, re]) => `(${re})`).join('|') },
      to: {},
    },
  ],
  options: {
    parser: 'swc',
    tsPreCompilationDeps: true,
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(dist|node_modules)/' },
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
