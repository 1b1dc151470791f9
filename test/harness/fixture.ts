/**
 * The set-up most daemon tests share: a fresh etcd on free loopback ports, a
 * client for it, and the daemon as a child process pointed at it (ready unless
 * asked otherwise); all three are torn down whatever the test does.
 */
import { Etcd3 } from 'etcd3';
import { DaemonProcess } from './daemon.js';
import { startEtcd, type EtcdHandle } from './etcd.js';

export interface Fixture {
  etcd: EtcdHandle;
  etcdc: Etcd3;
  d: DaemonProcess;
}

export interface FixtureOptions {
  /** Wait for the daemon's first list (default true). */
  ready?: boolean;
  /** The endpoint the daemon is given (e.g. a fault proxy's); default etcd's own. */
  endpoint?: (etcd: EtcdHandle) => string | Promise<string>;
  /** Extra tear-down, run first. */
  cleanup?: () => unknown;
}

export async function withDaemon(config: Record<string, unknown>, body: (f: Fixture) => Promise<void>, opts: FixtureOptions = {}): Promise<void> {
  const etcd = await startEtcd();
  const etcdc = new Etcd3({ hosts: etcd.endpoint });
  let d: DaemonProcess | undefined;
  try {
    const endpoint = opts.endpoint ? await opts.endpoint(etcd) : etcd.endpoint;
    d = new DaemonProcess({ etcd: { endpoints: [endpoint] }, ...config }).start();
    if (opts.ready ?? true) await d.ready();
    await body({ etcd, etcdc, d });
  } finally {
    await opts.cleanup?.();
    etcdc.close();
    await d?.cleanup();
    await etcd.stop();
  }
}
