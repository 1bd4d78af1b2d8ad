import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * An HTTP server on 127.0.0.1 for the test doubles: a random free port unless one is given,
 * and a stop that drops open keep-alive connections instead of waiting on them.
 */
export class LoopbackServer {
  private server: Server | undefined;

  constructor(private readonly handler: (req: IncomingMessage, res: ServerResponse) => Promise<void>) {}

  async start(port = 0): Promise<string> {
    const server = createServer((req, res) => void this.handler(req, res));
    this.server = server;
    await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
