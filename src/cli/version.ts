import type { Command } from 'commander';
import { VERSION } from '../version.js';
import { outputOption, printStructured, type OutputFormat } from './common.js';

/** `confsync version`: what to paste into a bug report (`-V` prints the version alone). */
export function registerVersion(program: Command): void {
  program
    .command('version')
    .description('print the confsync version, the Node.js version and the platform')
    .addOption(outputOption())
    .action((flags: { output: OutputFormat }) => {
      const info = { version: VERSION, node: process.versions.node, platform: process.platform, arch: process.arch };
      if (flags.output !== 'text') return printStructured(flags.output, info);
      process.stdout.write(`confsync ${info.version}\nnode     ${info.node}\nplatform ${info.platform}-${info.arch}\n`);
    });
}
