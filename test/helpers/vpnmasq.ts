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

  /** The state snapshot directory: one per router, so parallel tests never read each other's state. */
  readonly stateDir: string;

  constructor(readonly lab: Lab, extraConfig = '', main = '') {
    this.dir = mkdtempSync(join(tmpdir(), 'vpnmasq-test-'));
    this.config = join(this.dir, 'vpnmasq');
    this.sock = join(this.dir, 'vpnmasq.sock');
    this.stateDir = join(this.dir, 'state');
    this.writeConfig(extraConfig, main);
  }

  /** (Re)writes the config file; `main` adds options to the main section. */
  writeConfig(extraConfig = '', main = ''): void {
    writeFileSync(this.config, `config vpnmasq 'main'
	option lan_device 'br-lan'
	option wan_device 'wan'
	option enabled '1'
	option log_level 'debug'
	option control_socket '${this.sock}'
${main.includes('snapshot_dir') ? '' : `\toption snapshot_dir '${this.stateDir}'\n`}${main}
${extraConfig}
`);
  }

  /** The state snapshot file of this router (default tun_inside). */
  get snapshotFile(): string { return join(this.stateDir, 'snapshot-tin.bin'); }

  async start(args: string[] = []): Promise<void> {
    const readyBefore = this.output.split('vpnmasq ready').length;
    this.exitCode = null;
    const proc = this.lab.spawn(this.lab.router, ['node', CLI, 'run', '--config', this.config, ...args]);
    this.proc = proc;
    proc.stdout!.on('data', (d) => { this.output += d; });
    proc.stderr!.on('data', (d) => { this.output += d; });
    proc.on('exit', (code, sig) => { if (this.proc === proc) this.exitCode = code ?? (sig ? 128 : null); });
    for (let i = 0; i < 150; i++) {
      if (this.output.split('vpnmasq ready').length > readyBefore && existsSync(this.sock)) return;
      if (this.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`vpnmasq did not become ready:\n${this.output}`);
  }

  /** SIGTERM and wait (a clean stop: the final snapshot is written); keeps the directory for a restart. */
  async term(): Promise<number | null> {
    if (this.exitCode === null && this.proc) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      await exited;
    }
    return this.exitCode;
  }

  /** kill -9: a crash; routes, rules and the snapshot file stay behind. */
  async kill9(): Promise<void> {
    if (this.exitCode !== null) return;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
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
