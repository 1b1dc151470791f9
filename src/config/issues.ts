import type { z } from 'zod';
import { printable } from '../keyspace.js';

/** `a.b[0].c: message; …` — every problem on one line, each led by its field path. */
export function formatIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const path = fieldPath(issue.path);
      if (issue.code === 'unrecognized_keys') {
        return issue.keys.map((k) => `unknown field ${fieldPath([...issue.path, k])}`).join('; ');
      }
      return `field ${path || '(top level)'}: ${issue.message}`;
    })
    .join('; ');
}

export function fieldPath(path: PropertyKey[]): string {
  return path.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${printable(String(p))}` : printable(String(p))), '');
}

