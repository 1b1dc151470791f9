import net from 'node:net';
import { freePort } from './ports.js';

/**
 * A TCP fault proxy (etcd3's own suite runs behind one): `cut()` drops every
 * connection and refuses new ones until `restore()`; `throttle` slows the
 * server→client direction so a catch-up takes long enough to interrupt.
 *
 * With `label`, each connection is named from its first bytes (e.g. the sending
 * etcd member, from the `X-PeerURLs` header of etcd's peer HTTP requests), and
 * `cut(label)` drops and refuses only that sender's connections: with one proxy
 * in front of every member's peer port, that is a network partition.
 */
export interface FaultProxy {
  endpoint: string;
  cut(label?: string): void;
  restore(label?: string): void;
  throttle(bytesPerTick: number | undefined, tickMs?: number): void;
  close(): Promise<void>;
}

export async function startProxy(target: string, opts: { label?: (firstBytes: Buffer) => string | undefined; port?: number } = {}): Promise<FaultProxy> {
  const url = new URL(target);
  const port = opts.port ?? (await freePort());
  const sockets = new Set<net.Socket>();
  const labelled = new Map<net.Socket, string>();
  const cutLabels = new Set<string>();
  let cut = false;
  let limit: { bytes: number; tickMs: number } | undefined;

  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    if (!opts.label) return relay(client);
    client.once('data', (first: Buffer) => {
      client.pause();
      const label = opts.label!(first);
      if (label !== undefined && cutLabels.has(label)) return client.destroy();
      if (label !== undefined) labelled.set(client, label);
      relay(client, first);
    });
    client.on('error', () => client.destroy());
  });

  function relay(client: net.Socket, first?: Buffer) {
    const upstream = net.connect(Number(url.port), url.hostname);
    if (first) upstream.write(first);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
      labelled.delete(client);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      if (!limit) return void client.write(chunk);
      // Split into slices and pause the upstream between them.
      upstream.pause();
      const { bytes, tickMs } = limit;
      let off = 0;
      const next = () => {
        if (client.destroyed) return;
        client.write(chunk.subarray(off, off + bytes));
        off += bytes;
        if (off < chunk.length) setTimeout(next, tickMs);
        else upstream.resume();
      };
      next();
    });
  }
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));

  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut(label) {
      if (label !== undefined) {
        cutLabels.add(label);
        for (const [c, l] of labelled) if (l === label) c.destroy();
        return;
      }
      cut = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore(label) {
      if (label !== undefined) cutLabels.delete(label);
      else cut = false;
    },
    throttle(bytes, tickMs = 5) {
      limit = bytes ? { bytes, tickMs } : undefined;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
