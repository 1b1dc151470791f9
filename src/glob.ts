/**
 * Shell-style globs over names (`*` any run of characters, `?` one character),
 * used for placement cluster lists and hook object patterns. No character
 * classes or braces: a pattern means what an operator reading it expects.
 */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

export function matchesGlob(name: string, glob: string): boolean {
  return globToRegExp(glob).test(name);
}
