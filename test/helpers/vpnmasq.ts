// Starts the real `vpnmasq run` (the built CLI) inside a lab's router
// namespace and talks to it through the real CLI.
import { mkdtempSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { Lab } from '../../src/lab/lab.js';

export const CLI = resolve(__dirname, '../../dist/cli/main.js');

export class RunningRouter {
  readonly dir: string;
  readonly config: string;
  readonly sock: string;
  proc!: ChildProcess;
  output = '';
  exitCode: number | null = null;

  constructor(readonly lab: Lab, extraConfig = '', main = '') {
    this.dir = mkdtempSync(join(tmpdir(), 'vpnmasq-test-'));
    this.config = join(this.dir, 'vpnmasq');
    this.sock = join(this.dir, 'vpnmasq.sock');
    writeFileSync(this.config, `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
	option log_level 'debug'
	option control_socket '${this.sock}'
${main}
${extraConfig}
`);
  }

  async start(): Promise<void> {
    this.proc = this.lab.spawn(this.lab.router, ['node', CLI, 'run', '--config', this.config]);
    this.proc.stdout!.on('data', (d) => { this.output += d; });
    this.proc.stderr!.on('data', (d) => { this.output += d; });
    this.proc.on('exit', (code) => { this.exitCode = code; });
    for (let i = 0; i < 150; i++) {
      if (this.output.includes('vpnmasq ready') && existsSync(this.sock)) return;
      if (this.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`vpnmasq did not become ready:\n${this.output}`);
  }

  cli(...args: string[]): { ok: boolean; stdout: string; stderr: string; status: number | null } {
    return this.lab.tryExec(this.lab.router, ['node', CLI, ...args, '--socket', this.sock]);
  }

  status(): any {
    const r = this.cli('status', '--json');
    if (!r.ok) throw new Error(r.stderr);
    return JSON.parse(r.stdout);
  }

  async stop(): Promise<number | null> {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
      this.proc.kill('SIGTERM');
      await new Promise((r) => this.proc.once('exit', r));
    }
    rmSync(this.dir, { recursive: true, force: true });
    return this.exitCode;
  }
}
