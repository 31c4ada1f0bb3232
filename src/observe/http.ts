// A small read-only HTTP server for the metrics and the dashboard, safe by
// construction:
//   - it binds the one address it is given (checked in listen.ts);
//   - a connection from an address outside `allow` (the LAN subnets and
//     loopback) is closed before a byte is read;
//   - only GET is answered (anything else: 405 with Allow: GET);
//   - responses are static strings or snapshots rebuilt at most once a
//     second (the handlers' business), so a client cannot make it work more;
//     beyond REQUESTS_PER_SECOND it answers 429 without calling a handler;
//   - small limits on connections, header size and time (slow-drip clients);
//   - every response carries a strict Content-Security-Policy (nothing but
//     this origin's script, style and fetch) and no-sniff/no-frame headers;
//   - `hostCheck`: requests whose Host is not the listening address are
//     refused (421), so a DNS-rebinding page cannot read the dashboard
//     through a LAN browser;
//   - `refuseCrossSite`: a browser request made by another site's page
//     (Sec-Fetch-Site other than none/same-origin) is refused (403).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import ipaddr from 'ipaddr.js';
import type { Listen } from '../config/options.js';

export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CSP,
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Cache-Control': 'no-store',
};

export const REQUESTS_PER_SECOND = 50;
const MAX_CONNECTIONS = 16;

export interface Reply { status?: number; type: string; body: string }
export type Route = () => Reply;

export interface ReadOnlyServerOptions {
  listen: Listen;
  /** CIDRs whose hosts may connect (loopback is always allowed). */
  allow: string[];
  routes: Record<string, Route>;
  hostCheck: boolean;
  refuseCrossSite: boolean;
  onError?: (err: Error) => void;
  /** The clock of the rate limit (tests). */
  now?: () => number;
}

export class ReadOnlyServer {
  private server: Server | null = null;
  private windowStart = 0;
  private inWindow = 0;
  private readonly allow: [ipaddr.IPv4, number][];
  refusedConnections = 0;

  constructor(private readonly o: ReadOnlyServerOptions) {
    this.allow = [ipaddr.IPv4.parseCIDR('127.0.0.0/8'), ...o.allow.map((c) => ipaddr.IPv4.parseCIDR(c))];
  }

  private allowed(remote: string | undefined): boolean {
    if (!remote) return false;
    let ip: ipaddr.IPv4 | ipaddr.IPv6;
    try { ip = ipaddr.process(remote); } catch { return false; }
    if (ip.kind() !== 'ipv4') return false;
    return this.allow.some((c) => (ip as ipaddr.IPv4).match(c));
  }

  listen(): Promise<void> {
    // connectionsCheckingInterval: how often Node enforces the two timeouts
    // (30 s by default), so a slow-drip client is cut off after 5-6 s.
    const server = createServer({
      maxHeaderSize: 8192, requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 2_000, connectionsCheckingInterval: 1_000,
    },
      (req, res) => this.answer(req, res));
    server.maxConnections = MAX_CONNECTIONS;
    server.maxRequestsPerSocket = 100;
    server.on('connection', (sock) => {
      if (!this.allowed(sock.remoteAddress)) { this.refusedConnections++; sock.destroy(); }
    });
    server.on('clientError', (_err, sock) => { if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'); else sock.destroy(); });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.o.listen.host, port: this.o.listen.port, exclusive: true }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.o.onError?.(err));
        resolve();
      });
    });
  }

  private send(res: ServerResponse, status: number, type: string, body: string, extra: Record<string, string> = {}): void {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...extra });
    res.end(body);
  }

  private answer(req: IncomingMessage, res: ServerResponse): void {
    const text = 'text/plain; charset=utf-8';
    if (req.method !== 'GET') return this.send(res, 405, text, 'only GET\n', { Allow: 'GET' });
    const now = (this.o.now ?? Date.now)();
    if (now - this.windowStart >= 1000) { this.windowStart = now; this.inWindow = 0; }
    if (++this.inWindow > REQUESTS_PER_SECOND) return this.send(res, 429, text, 'too many requests\n', { 'Retry-After': '1' });
    if (this.o.hostCheck) {
      const { host, port } = this.o.listen;
      const h = (req.headers.host ?? '').toLowerCase();
      if (h !== `${host}:${port}` && !(port === 80 && h === host)) return this.send(res, 421, text, 'wrong Host\n');
    }
    if (this.o.refuseCrossSite) {
      const site = req.headers['sec-fetch-site'];
      if (site !== undefined && site !== 'none' && site !== 'same-origin') return this.send(res, 403, text, 'cross-site request\n');
    }
    const path = (req.url ?? '/').split('?')[0]!;
    const route = Object.hasOwn(this.o.routes, path) ? this.o.routes[path] : undefined;
    if (!route) return this.send(res, 404, text, 'not found\n');
    let r: Reply;
    try { r = route(); } catch (err) { this.o.onError?.(err as Error); return this.send(res, 500, text, 'internal error\n'); }
    this.send(res, r.status ?? 200, r.type, r.body);
  }

  close(): Promise<void> {
    const s = this.server;
    this.server = null;
    if (!s) return Promise.resolve();
    return new Promise((resolve) => { s.close(() => resolve()); s.closeAllConnections(); });
  }
}
