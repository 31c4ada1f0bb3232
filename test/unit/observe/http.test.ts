// The read-only server behind metrics_listen and web_listen, on loopback:
// GET only, a strict Content-Security-Policy on every answer, Host checked
// (DNS rebinding), cross-site browser requests refused, unknown paths 404,
// connections from outside the allowed networks closed unanswered.
import { describe, it, expect, afterEach } from 'vitest';
import { request, Agent } from 'node:http';
import { connect } from 'node:net';
import { ReadOnlyServer, CSP } from '../../../src/observe/http.js';

let servers: ReadOnlyServer[] = [];
afterEach(async () => { await Promise.all(servers.map((s) => s.close())); servers = []; });

async function serve(o: { hostCheck?: boolean; allow?: string[]; now?: () => number } = {}) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const s = new ReadOnlyServer({
    listen: { host: '127.0.0.1', port }, allow: o.allow ?? [], hostCheck: o.hostCheck ?? false, refuseCrossSite: true, now: o.now,
    routes: { '/x': () => ({ type: 'text/plain', body: '<b>hi</b>' }) },
  });
  await s.listen();
  servers.push(s);
  return port;
}

function get(port: number, path: string, opts: { method?: string; headers?: Record<string, string>; localAddress?: string; agent?: Agent } = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, localAddress: opts.localAddress, agent: opts.agent }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('ReadOnlyServer', () => {
  it('answers GET with the route and security headers', async () => {
    const port = await serve();
    const r = await get(port, '/x');
    expect(r.status).toBe(200);
    expect(r.body).toBe('<b>hi</b>');
    expect(r.headers['content-security-policy']).toBe(CSP);
    expect(CSP).toMatch(/default-src 'none'/);
    expect(CSP).not.toMatch(/unsafe|\*/);
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['x-frame-options']).toBe('DENY');
    expect((await get(port, '/nope')).status).toBe(404);
    expect((await get(port, '/x?a=1')).status).toBe(200);
    expect((await get(port, '/constructor')).status).toBe(404); // no prototype lookups
  });

  it('answers 405 to everything but GET', async () => {
    const port = await serve();
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS']) {
      const r = await get(port, '/x', { method });
      expect(r.status, method).toBe(405);
      expect(r.headers.allow).toBe('GET');
    }
  });

  it('refuses another Host (DNS rebinding) and cross-site browser requests', async () => {
    const port = await serve({ hostCheck: true });
    expect((await get(port, '/x', { headers: { Host: `127.0.0.1:${port}` } })).status).toBe(200);
    expect((await get(port, '/x', { headers: { Host: `evil.example:${port}` } })).status).toBe(421);
    expect((await get(port, '/x', { headers: { Host: `127.0.0.1:${port}`, 'Sec-Fetch-Site': 'cross-site' } })).status).toBe(403);
    expect((await get(port, '/x', { headers: { Host: `127.0.0.1:${port}`, 'Sec-Fetch-Site': 'same-site' } })).status).toBe(403);
    expect((await get(port, '/x', { headers: { Host: `127.0.0.1:${port}`, 'Sec-Fetch-Site': 'same-origin' } })).status).toBe(200);
  });

  it('a flood gets 429 beyond REQUESTS_PER_SECOND in one second, and answers again the next second', async () => {
    let t = 1_000_000;
    const port = await serve({ now: () => t });
    const agent = new Agent({ keepAlive: true, maxSockets: 4 });
    const statuses: number[] = [];
    for (let i = 0; i < 60; i++) statuses.push((await get(port, '/x', { agent })).status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(50);
    expect(statuses.slice(50)).toEqual(Array(10).fill(429));
    t += 1000;
    expect((await get(port, '/x', { agent })).status).toBe(200);
    agent.destroy();
  });

  it('cuts off a slow-drip client that never finishes its headers', async () => {
    const port = await serve();
    const sock = connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write('GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const drip = setInterval(() => { if (!sock.destroyed) sock.write('X-a: b\r\n'); }, 500);
    let reply = '';
    sock.on('data', (d) => (reply += d));
    await new Promise((r) => sock.once('close', r));
    clearInterval(drip);
    expect(reply).toMatch(/^HTTP\/1\.1 (408|400)/);
  }, 30_000);

  it('closes connections from outside the allowed networks before answering', async () => {
    // loopback is always allowed; 127.0.0.2 is loopback too, so bind to an
    // allow list that the server checks by asking it about a non-loopback peer
    const port = await serve({ allow: ['192.168.1.0/24'] });
    const s = servers[0]!;
    const allowed = (s as unknown as { allowed(a: string): boolean }).allowed.bind(s);
    expect(allowed('192.168.1.20')).toBe(true);
    expect(allowed('::ffff:192.168.1.20')).toBe(true);
    expect(allowed('203.0.113.2')).toBe(false);
    expect(allowed('10.0.0.1')).toBe(false);
    expect(allowed('::1')).toBe(false);
    expect((await get(port, '/x')).status).toBe(200);
  });
});
