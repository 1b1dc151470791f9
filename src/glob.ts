/**
 * Shell-style globs over names (`*` any run of characters, `?` one character),
 * used for placement cluster lists (written by anyone who can write etcd) and
 * hook object patterns. No character classes or braces: a pattern means what an
 * operator reading it expects.
 *
 * Matched without a regular expression: a `*`-heavy pattern turned into `.*.*…`
 * makes a backtracking engine take exponential time (minutes for 8,000 stars).
 * The loop below is the greedy wildcard match that only ever resumes from the
 * most recent `*`: at most (name length + 1) × (pattern length + 1) steps.
 */

/** Longest glob accepted anywhere (a cluster name or object id is shorter). */
export const MAX_GLOB_LENGTH = 512;

export function matchesGlob(name: string, glob: string): boolean {
  if (glob.length > MAX_GLOB_LENGTH) return false;
  let n = 0;
  let g = 0;
  let starG = -1; // pattern index just after the last `*` seen
  let starN = 0; // name index that `*` is currently extended to
  while (n < name.length) {
    if (g < glob.length && (glob[g] === '?' || (glob[g] !== '*' && glob[g] === name[n]))) {
      n++;
      g++;
    } else if (g < glob.length && glob[g] === '*') {
      starG = ++g;
      starN = n;
    } else if (starG >= 0) {
      // The last `*` swallows one more character; nothing before it is revisited.
      g = starG;
      n = ++starN;
    } else {
      return false;
    }
  }
  while (g < glob.length && glob[g] === '*') g++;
  return g === glob.length;
}

/** A matcher for one glob, for callers that test many names. */
export function globMatcher(glob: string): (name: string) => boolean {
  return (name) => matchesGlob(name, glob);
}
