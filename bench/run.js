// `npm run bench`: the core microbenchmark, then the end-to-end comparison
// with the kernel's nftables masquerade (needs root; skipped with a note otherwise).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const pass = process.argv.slice(2);
const core = spawnSync(process.execPath, [join(here, 'core.js'), ...pass.filter((a) => a.startsWith('--core-')).map((a) => a.replace('--core-', '--'))], { stdio: 'inherit' });
if (core.status !== 0) process.exit(core.status ?? 1);
if (process.getuid && process.getuid() !== 0) {
  console.log('\nend-to-end: skipped (needs root for network namespaces: sudo npm run bench)');
  process.exit(0);
}
const e2e = spawnSync(process.execPath, [join(here, 'e2e.js'), ...pass.filter((a) => !a.startsWith('--core-'))], { stdio: 'inherit' });
process.exit(e2e.status ?? 1);
