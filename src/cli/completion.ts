/**
 * `confsync completion bash|zsh|fish`: a completion script generated from
 * commander's own command tree (commands, subcommands, long and short options,
 * option choices), so a new verb or flag completes without anyone keeping a list.
 */
import { Argument, type Command, type Option } from 'commander';

interface Node {
  /** ' config set' — the words after `confsync`, each preceded by a space ('' is the root). */
  path: string;
  cmd: Command;
}

/** Only plain words reach a script: names and choices are ours, but a quote here would be code there. */
const WORD = /^[A-Za-z0-9][A-Za-z0-9_.:=@-]*$/;
const words = (list: (string | undefined)[]) => list.filter((w): w is string => !!w && WORD.test(w.replace(/^-{1,2}/, '')));

function walk(cmd: Command, path = ''): Node[] {
  return [{ path, cmd }, ...cmd.commands.flatMap((c) => walk(c, `${path} ${c.name()}`))];
}

const visible = (cmd: Command): Option[] => cmd.options.filter((o) => !o.hidden);
/** Options that take a value: the word after them is a value, not a verb or flag. */
const takesValue = (o: Option) => o.required || o.optional;
/** A value that names a file: complete file names (otherwise offer nothing but choices). */
const fileValue = (o: Option) => /<(file|dir)>/.test(o.flags) || /^--(file|out|dir)$/.test(o.long ?? '');
const summary = (text: string) => text.split(/[;:(]/)[0]!.trim().slice(0, 80);

function candidates(node: Node): string[] {
  const subs = node.cmd.commands.map((c) => c.name());
  // A first argument with fixed choices (`completion bash|zsh|fish`) completes like a subcommand.
  subs.push(...(node.cmd.registeredArguments[0]?.argChoices ?? []));
  const flags = visible(node.cmd).flatMap((o) => [o.long, o.short]);
  return words([...subs, ...flags, '-h', '--help']);
}

export function bashScript(program: Command): string {
  const nodes = walk(program);
  const known = nodes.filter((n) => n.path).map((n) => `"${n.path}"`);
  const valueCases: string[] = [];
  for (const n of nodes) {
    for (const o of visible(n.cmd).filter(takesValue)) {
      const on = words([o.long, o.short]).map((f) => `"${n.path}|${f}"`);
      if (on.length === 0) continue;
      const reply = o.argChoices ? `compgen -W "${words(o.argChoices).join(' ')}" -- "$cur"` : fileValue(o) ? 'compgen -f -- "$cur"' : 'true';
      valueCases.push(`    ${on.join('|')}) COMPREPLY=($(${reply})); return ;;`);
    }
  }
  const wordCases = nodes.map((n) => `    "${n.path}") words="${candidates(n).join(' ')}" ;;`);
  return `# confsync completion for bash, generated from its command tree by \`confsync completion bash\`.
# Load it with: source <(confsync completion bash)
_confsync() {
  # zsh (bashcompinit) hands COMP_WORDS over 1-based; ksharrays makes it 0-based like bash's.
  [ -n "\${ZSH_VERSION-}" ] && setopt localoptions ksharrays
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" path="" words="" w i
  COMPREPLY=()
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$path $w" in
      ${known.join('|')}) path="$path $w" ;;
    esac
  done
  case "$path|$prev" in
${valueCases.join('\n')}
  esac
  case "$path" in
${wordCases.join('\n')}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _confsync confsync
`;
}

/** zsh runs the bash function through its own bashcompinit layer: one generated walker for both shells. */
export function zshScript(program: Command): string {
  return `#compdef confsync
# confsync completion for zsh, generated from its command tree by \`confsync completion zsh\`.
# Load it with: source <(confsync completion zsh)   (uses zsh's bashcompinit)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashScript(program).split('\n').filter((l) => !l.startsWith('#')).join('\n')}`;
}

export function fishScript(program: Command): string {
  const nodes = walk(program);
  const q = (s: string) => `'${s.replace(/[\\']/g, (c) => `\\${c}`)}'`;
  const lines = [
    '# confsync completion for fish, generated from its command tree by `confsync completion fish`.',
    '# Load it with: confsync completion fish | source',
    `set -g __confsync_paths ${nodes.filter((n) => n.path).map((n) => q(n.path)).join(' ')}`,
    'function __confsync_at',
    '    set -l words (commandline -opc)',
    '    set -e words[1]',
    "    set -l path ''",
    '    for w in $words',
    '        if contains -- "$path $w" $__confsync_paths',
    '            set path "$path $w"',
    '        end',
    '    end',
    '    test "$path" = "$argv[1]"',
    'end',
    'complete -c confsync -f',
  ];
  for (const n of nodes) {
    const at = `-n ${q(`__confsync_at ${q(n.path)}`)}`;
    const choices = words(n.cmd.registeredArguments[0]?.argChoices ?? []);
    if (choices.length > 0) lines.push(`complete -c confsync ${at} -a ${q(choices.join(' '))}`);
    for (const c of n.cmd.commands) if (WORD.test(c.name())) lines.push(`complete -c confsync ${at} -a ${c.name()} -d ${q(summary(c.description()))}`);
    for (const o of visible(n.cmd)) {
      const long = o.long && WORD.test(o.long.slice(2)) ? ` -l ${o.long.slice(2)}` : '';
      const short = o.short && WORD.test(o.short.slice(1)) ? ` -s ${o.short.slice(1)}` : '';
      if (!long && !short) continue;
      const value = !takesValue(o) ? '' : o.argChoices ? ` -x -a ${q(words(o.argChoices).join(' '))}` : fileValue(o) ? ' -r -F' : ' -x';
      lines.push(`complete -c confsync ${at}${long}${short}${value} -d ${q(summary(o.description))}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export function registerCompletion(program: Command): void {
  program
    .command('completion')
    .description('print a shell completion script (bash: source <(confsync completion bash); fish: confsync completion fish | source)')
    .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh', 'fish']))
    .action((shell: 'bash' | 'zsh' | 'fish') => {
      const script = { bash: bashScript, zsh: zshScript, fish: fishScript }[shell];
      process.stdout.write(script(program));
    });
}
