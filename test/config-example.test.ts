import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { loadConfigFile } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';

const EXAMPLE = fileURLToPath(new URL('../../config.example.yaml', import.meta.url));

test('config.example.yaml loads through the real loader', () => {
  const cfg = loadConfigFile(EXAMPLE, {}, { NODE_NAME: 'node-7' });
  assert.equal(cfg.cluster, 'prod-eu');
  assert.equal(cfg.node, 'node-7');
  assert.equal(cfg.sinks.files?.configFileMode, 0o644);
  assert.equal(cfg.sinks.files?.secretFileMode, 0o400);
  assert.equal(cfg.sinks.files?.secretsRoot, '/run/confsync/secrets');
});

test('config.example.yaml mentions every top-level and nested field of the schema', async () => {
  const text = (await import('node:fs')).readFileSync(EXAMPLE, 'utf8');
  const fields: string[] = [];
  const visit = (shape: Record<string, any>) => {
    for (const [name, schema] of Object.entries(shape)) {
      fields.push(name);
      let inner = schema;
      // unwrap optional/default/prefault wrappers to reach a nested object
      for (let i = 0; i < 5 && inner && !inner.shape; i++) inner = inner.def?.innerType ?? inner.unwrap?.();
      if (inner?.shape) visit(inner.shape);
    }
  };
  visit(configSchema.shape);
  const missing = fields.filter((f) => !new RegExp(`\\b${f}\\b`).test(text));
  assert.deepEqual(missing, [], 'documented in config.example.yaml');
});
