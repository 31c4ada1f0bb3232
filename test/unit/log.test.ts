// Logs as a router needs them (issue 11): off a terminal one line per
// message, the message first and then key=value, info on stdout and
// warnings/errors on stderr (procd files stderr at daemon.err); JSON lines
// for --log-format json, also split by level; the format's choice.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { logFormat, textLine } from '../../src/log.js';

const LOG = join(resolve(__dirname, '../..'), 'dist/log.js');

function logs(format: string, env: Record<string, string> = {}) {
  const code = `const { createLogger } = await import(${JSON.stringify(LOG)});
const log = createLogger('info', ${format === '' ? '{}' : `{ format: ${JSON.stringify(format)} }`});
log.debug('not shown');
log.info({ lan: 'br-lan', wanAddress: '203.0.113.1', redirects: ['web: tcp 8080 -> 192.168.1.10:80'] }, 'vpnmasq ready');
log.warn({ old: '203.0.113.1' }, 'WAN address lost');
log.error({ error: 'x:7: bad' }, 'reload refused');`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', env: { ...process.env, ...env } });
  expect(r.status, r.stderr).toBe(0);
  return { stdout: r.stdout, stderr: r.stderr };
}

describe('text lines', () => {
  it('message first, then key=value; strings bare when plain, else JSON; level= for warn and above', () => {
    expect(textLine({ level: 30, time: 1, msg: 'vpnmasq ready', lan: 'br-lan', wanAddress: null, n: 3, ok: true, subnets: ['a', 'b'] }))
      .toBe('vpnmasq ready lan=br-lan wanAddress=null n=3 ok=true subnets=["a","b"]');
    expect(textLine({ level: 40, msg: 'WAN address lost', old: '203.0.113.1' })).toBe('WAN address lost level=warn old=203.0.113.1');
    expect(textLine({ level: 50, msg: 'reload refused', error: 'a b\nc' })).toBe('reload refused level=error error="a b\\nc"');
    // one line, whatever the message holds
    expect(textLine({ level: 30, msg: 'two\nlines' })).toBe('two lines');
  });

  it('--log-format text: info on stdout, warnings and errors on stderr, one readable line each', () => {
    const { stdout, stderr } = logs('text');
    expect(stdout).toBe('vpnmasq ready lan=br-lan wanAddress=203.0.113.1 redirects=["web: tcp 8080 -> 192.168.1.10:80"]\n');
    expect(stderr).toBe('WAN address lost level=warn old=203.0.113.1\nreload refused level=error error="x:7: bad"\n');
  });

  it('--log-format json: pino JSON lines, split by level the same way', () => {
    const { stdout, stderr } = logs('json');
    const out = stdout.trim().split('\n').map((l) => JSON.parse(l));
    const err = stderr.trim().split('\n').map((l) => JSON.parse(l));
    expect(out).toMatchObject([{ level: 30, msg: 'vpnmasq ready', name: 'vpnmasq' }]);
    expect(err).toMatchObject([{ level: 40, msg: 'WAN address lost' }, { level: 50, msg: 'reload refused' }]);
  });

  it('the default off a terminal is text; VPNMASQ_LOG_FORMAT=json (the image) gives JSON', () => {
    expect(logs('').stdout).toMatch(/^vpnmasq ready lan=br-lan /);
    expect(JSON.parse(logs('', { VPNMASQ_LOG_FORMAT: 'json' }).stdout).msg).toBe('vpnmasq ready');
  });

  it('the choice: explicit, else the environment, else text off a terminal', () => {
    expect(logFormat('json', { VPNMASQ_LOG_FORMAT: 'text' })).toBe('json');
    expect(logFormat(undefined, { VPNMASQ_LOG_FORMAT: 'json' })).toBe('json');
    expect(logFormat(undefined, { VPNMASQ_LOG_FORMAT: 'bogus' })).toBe(process.stdout.isTTY ? 'pretty' : 'text');
  });
});
