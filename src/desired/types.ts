/** The pure core's output: what one object should look like on this cluster. */
import type { ObjectId, ObjectKind } from '../keyspace.js';

export interface DesiredObject {
  id: ObjectId;
  kind: ObjectKind;
  namespace: string;
  name: string;
  /** key -> bytes. For secrets this is plaintext: never log it, never put it in an error. */
  data: Map<string, Buffer>;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  /** Secret type from @meta; undefined means Opaque. */
  type?: string;
  immutable?: boolean;
  /** Highest etcd mod revision among the keys (and @meta) that made this object. */
  revision: number;
  /** sha256 hex over keys, values and metadata: equal hash means nothing to write. */
  hash: string;
}
