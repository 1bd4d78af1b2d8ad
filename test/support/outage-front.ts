import { request as httpRequest, Agent, type IncomingMessage, type ServerResponse } from 'node:http';
import { LoopbackServer } from './loopback-server.js';

/** One request the front forwarded, as it went and came back. */
export interface FrontRequest {
  /** The Authorization header: tells the callers apart when each has a key of its own. */
  authorization: string | undefined;
  /** When it arrived and when its answer was complete (ms since the epoch). */
  sentAt: number;
  answeredAt: number;
  status: number;
  /** The embeddings inputs it carried (an OpenAI-style body's `input`), when it had any. */
  inputs: string[];
}

/**
 * An HTTP front for a test double (the embeddings stub): it forwards every request as is while
 * up, and answers every request itself while `down` (503 with an OpenAI-style error body by
 * default), for an outage of a given duration rather than of a given number of requests. The
 * stub behind it only sees (and counts in `served`) what was forwarded; `forwarded` says who
 * sent each of those, and when.
 */
export class OutageFront {
  private readonly http = new LoopbackServer((req, res) => this.onRequest(req, res));
  private readonly agent = new Agent({ keepAlive: true });
  private target: URL | undefined;
  down = false;
  /** Requests answered by the front itself while down. */
  refused = 0;
  readonly forwarded: FrontRequest[] = [];

  constructor(
    private readonly outage: { status: number; body: unknown } = {
      status: 503,
      body: { error: { message: 'The server is overloaded or not ready yet.', type: 'server_error', param: null, code: null } },
    },
  ) {}

  /** Forwards to `targetBaseUrl` (e.g. the stub's `http://127.0.0.1:port/v1`); returns its own base URL with the same path. */
  async start(targetBaseUrl: string): Promise<string> {
    this.target = new URL(targetBaseUrl);
    const base = await this.http.start();
    return `${base}${this.target.pathname.replace(/\/$/, '')}`;
  }

  async stop(): Promise<void> {
    await this.http.stop();
    this.agent.destroy();
  }

  private async onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    if (this.down || !this.target) {
      this.refused++;
      res.writeHead(this.outage.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(this.outage.body));
      return;
    }
    const target = this.target;
    const body = Buffer.concat(chunks);
    const sentAt = Date.now();
    const headers = { ...req.headers, host: target.host };
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent: this.agent }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
      answer.on('end', () => this.forwarded.push({ authorization: req.headers.authorization, sentAt, answeredAt: Date.now(), status: answer.statusCode ?? 0, inputs: inputsOf(body) }));
    });
    upstream.on('error', () => {
      // The stub went away (it is stopped last, at cleanup): drop the client's connection as a dead server would.
      req.socket.destroy();
    });
    upstream.end(body);
  }
}

function inputsOf(body: Buffer): string[] {
  try {
    const input = (JSON.parse(body.toString('utf8')) as { input?: unknown }).input;
    const list = typeof input === 'string' ? [input] : Array.isArray(input) ? input : [];
    return list.filter((i): i is string => typeof i === 'string');
  } catch {
    return [];
  }
}
