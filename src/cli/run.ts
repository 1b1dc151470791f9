import type { Command } from 'commander';
import { loadConfigFile } from '../config/load.js';
import { startDaemon } from '../daemon.js';
import { UserError } from '../errors.js';
import { createLogger } from '../log.js';
import { connectionOptions, overridesFrom, untilSignal } from './common.js';

export function registerRun(program: Command): void {
  connectionOptions(program.command('run').description('run the daemon (SIGTERM/SIGINT: clean exit 0)')).action(async (flags) => {
    if (!flags.config) throw new UserError('run: --config FILE is required (see config.example.yaml)');
    const cfg = loadConfigFile(flags.config, overridesFrom(flags));
    const logger = createLogger(cfg.log.level, undefined, cfg.log.format);
    const daemon = await startDaemon(cfg, logger);
    await untilSignal();
    logger.info('stopping');
    await daemon.stop();
    logger.info('stopped');
    // Everything is stopped; pino flushes (a pretty transport too) on exit. Exit now
    // rather than wait ~10 s for an idle gRPC socket of etcd3's to time out.
    process.exit(0);
  });
}
