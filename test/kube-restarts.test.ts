import { test } from 'node:test';
import assert from 'node:assert/strict';
import { templateUses } from '../src/reactions/restarts.js';

const pod = (spec: Record<string, unknown>) => ({ spec: { containers: [], ...spec } }) as any;

const cases: [string, any, string, boolean][] = [
  ['configMap volume', pod({ volumes: [{ name: 'v', configMap: { name: 'app' } }] }), 'configmaps/ns/app', true],
  ['secret volume', pod({ volumes: [{ name: 'v', secret: { secretName: 'db' } }] }), 'secrets/ns/db', true],
  ['secret volume does not match a configmap of that name', pod({ volumes: [{ name: 'v', secret: { secretName: 'app' } }] }), 'configmaps/ns/app', false],
  ['projected configMap', pod({ volumes: [{ name: 'v', projected: { sources: [{ configMap: { name: 'app' } }] } }] }), 'configmaps/ns/app', true],
  ['projected secret', pod({ volumes: [{ name: 'v', projected: { sources: [{ secret: { name: 'db' } }] } }] }), 'secrets/ns/db', true],
  ['envFrom configMapRef', pod({ containers: [{ name: 'c', envFrom: [{ configMapRef: { name: 'app' } }] }] }), 'configmaps/ns/app', true],
  ['envFrom secretRef', pod({ containers: [{ name: 'c', envFrom: [{ secretRef: { name: 'db' } }] }] }), 'secrets/ns/db', true],
  ['env configMapKeyRef in an init container', pod({ initContainers: [{ name: 'i', env: [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'app', key: 'k' } } }] }] }), 'configmaps/ns/app', true],
  ['env secretKeyRef', pod({ containers: [{ name: 'c', env: [{ name: 'X', valueFrom: { secretKeyRef: { name: 'db', key: 'k' } } }] }] }), 'secrets/ns/db', true],
  ['another name', pod({ volumes: [{ name: 'v', configMap: { name: 'other' } }] }), 'configmaps/ns/app', false],
  ['no spec', {}, 'configmaps/ns/app', false],
];

for (const [name, template, id, want] of cases) {
  test(`templateUses: ${name}`, () => assert.equal(templateUses(template, id), want));
}
