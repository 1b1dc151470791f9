import { z } from 'zod';
import { formatIssues } from '../config/issues.js';
import { matchesGlob, MAX_GLOB_LENGTH } from '../glob.js';

/** Bounds on what one @meta may ask for: it comes from anyone who can write etcd. */
const MAX_ENTRIES = 256;
const label = z.string().max(63);
const stringMap = z.record(z.string().max(317), z.string().max(63 * 1024)).refine((r) => Object.keys(r).length <= MAX_ENTRIES, `at most ${MAX_ENTRIES} entries`);

/** `@meta` (SPEC §1): all fields optional; unknown fields are refused so typos surface. */
export const metaSchema = z.strictObject({
  labels: stringMap.optional(),
  annotations: stringMap.optional(),
  type: z.string().min(1).max(253).optional(),
  immutable: z.boolean().optional(),
  placement: z
    .strictObject({
      clusters: z.array(z.string().min(1).max(MAX_GLOB_LENGTH)).max(MAX_ENTRIES).optional(),
      clusterSelector: z.strictObject({ matchLabels: z.record(z.string().max(317), label) }).optional(),
    })
    .optional(),
});

export type Meta = z.infer<typeof metaSchema>;

/** Parse an @meta value; returns a one-line reason on failure (never the value). */
export function parseMeta(value: Buffer): { meta: Meta } | { error: string } {
  // Kubernetes caps all annotations of an object at 256 KiB; a bigger @meta is not one.
  if (value.length > 512 * 1024) return { error: `@meta is ${value.length} bytes (at most 524288)` };
  let raw: unknown;
  try {
    raw = JSON.parse(value.toString('utf8'));
  } catch {
    return { error: '@meta is not valid JSON' };
  }
  const result = metaSchema.safeParse(raw);
  if (!result.success) return { error: `@meta ${formatIssues(result.error)}` };
  return { meta: result.data };
}

/**
 * Does a placement admit this cluster? No placement = everywhere. With both
 * `clusters` and `clusterSelector`, both must match.
 */
export function placementAdmits(meta: Meta | undefined, cluster: string, labels: Record<string, string>): boolean {
  const p = meta?.placement;
  if (!p) return true;
  if (p.clusters && !p.clusters.some((g) => matchesGlob(cluster, g))) return false;
  if (p.clusterSelector && !Object.entries(p.clusterSelector.matchLabels).every(([k, v]) => labels[k] === v)) return false;
  return true;
}
