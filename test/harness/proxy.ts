import net from 'node:net';
import { freePort } from './ports.js';

/**
 * A TCP fault proxy (etcd3's own suite runs behind one): `cut()` drops every
 * connection and refuses new ones until `restore()`; `throttle` slows the
 * server→client direction so a catch-up takes long enough to interrupt.
 */
export interface FaultProxy {
  endpoint: string;
  cut(): void;
  restore(): void;
  throttle(bytesPerTick: number | undefined, tickMs?: number): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<FaultProxy> {
  const url = new URL(target);
  const port = await freePort();
  const sockets = new Set<net.Socket>();
  let cut = false;
  let limit: { bytes: number; tickMs: number } | undefined;

  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    const upstream = net.connect(Number(url.port), url.hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
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
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));

  return {
    endpoint: `http://127.0.0.1:${port}`,
    cut() {
      cut = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      cut = false;
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
