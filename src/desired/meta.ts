import { z } from 'zod';
import { formatIssues } from '../config/load.js';
import { matchesGlob } from '../glob.js';

/** `@meta` (SPEC §1): all fields optional; unknown fields are refused so typos surface. */
export const metaSchema = z.strictObject({
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  type: z.string().min(1).optional(),
  immutable: z.boolean().optional(),
  placement: z
    .strictObject({
      clusters: z.array(z.string().min(1)).optional(),
      clusterSelector: z.strictObject({ matchLabels: z.record(z.string(), z.string()) }).optional(),
    })
    .optional(),
});

export type Meta = z.infer<typeof metaSchema>;

/** Parse an @meta value; returns a one-line reason on failure (never the value). */
export function parseMeta(value: Buffer): { meta: Meta } | { error: string } {
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
