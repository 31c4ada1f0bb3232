import { connect } from 'node:net';
import type { Command, Response } from './protocol.js';

/** One request over the control socket; rejects with a clear message when nothing listens. */
export function request(path: string, cmd: Command, timeoutMs = 5000, fields: Record<string, unknown> = {}): Promise<Response> {
  return new Promise((resolve, reject) => {
    const sock = connect(path);
    let buf = '';
    const timer = setTimeout(() => { sock.destroy(); reject(new Error(`no answer from ${path} within ${timeoutMs} ms`)); }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(JSON.stringify({ ...fields, cmd }) + '\n'));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.end();
        try { resolve(JSON.parse(buf.slice(0, nl)) as Response); } catch (e) { reject(e); }
      }
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new Error(`vpnmasq is not running (no control socket at ${path})`));
      else if (err.code === 'EACCES') reject(new Error(`permission denied on ${path}: the control socket is for root`));
      else reject(err);
    });
  });
}
