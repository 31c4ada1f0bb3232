// Local control socket for the CLI: a Unix socket only root can open
// (mode 0600 in a root-owned directory), one JSON request per line.
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Request, Response } from './protocol.js';

export type Handler = (req: Request) => Promise<Response> | Response;

export class ControlServer {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  constructor(readonly path: string, private readonly handler: Handler) {}

  async listen(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true });
    // A socket file left by a crashed run would make listen fail with EADDRINUSE.
    if (existsSync(this.path)) unlinkSync(this.path);
    const server = createServer((sock) => this.serve(sock));
    this.server = server;
    const oldMask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.path, () => { server.off('error', reject); resolve(); });
      });
    } finally {
      process.umask(oldMask);
    }
    chmodSync(this.path, 0o600);
  }

  private serve(sock: Socket): void {
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('data', async (chunk: string) => {
      buf += chunk;
      if (buf.length > 65536) { sock.destroy(); return; }
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let res: Response;
        try {
          const req = JSON.parse(line) as Request;
          res = await this.handler(req);
        } catch (err) {
          res = { ok: false, error: err instanceof Error ? err.message : String(err) };
        }
        if (!sock.destroyed) sock.write(JSON.stringify(res) + '\n');
      }
    });
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = null;
    try { unlinkSync(this.path); } catch { /* already gone */ }
  }
}
