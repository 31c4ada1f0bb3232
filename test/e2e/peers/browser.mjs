// Headless Chromium (Debian's `chromium`, driven by playwright-core through
// its executablePath: no browser download) loading the vpnmasq dashboard.
// Run inside a namespace: `ip netns exec NS node browser.mjs '<json>'`.
//   {url, timeoutMs, screenshot?, expectEsp?: "0x...", minSamples?, hostile?: "<markup>"}
// hostile: the page's /api/flows and /api/stats answers are replaced by ones
// carrying that string in every text field (an attacker's data), and the
// result says whether any of it became markup or ran.
// Prints one JSON line: {loaded, error?, samples, lastOut, lastIn, esp: [[cells]...],
//   ike, drops, wan, cspViolations: [...], consoleErrors: [...], status}
import { chromium } from 'playwright-core';

const o = JSON.parse(process.argv[2]);
const out = { loaded: false, cspViolations: [], consoleErrors: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  // as root in a namespace: no user namespaces for the sandbox
  // and nothing of its own on the network (no update checks, no prefetch): the only traffic is the page's
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run', '--disable-extensions',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-pings',
    '--dns-prefetch-disable', '--disable-domain-reliability', '--disable-features=DnsOverHttps,MediaRouter,OptimizationHints',
    // the dashboard is an address: no name is ever looked up
    `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${new URL(o.url).hostname}`],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 1400 } });
  page.on('console', (m) => {
    const t = m.text();
    if (/Content Security Policy/i.test(t)) out.cspViolations.push(t);
    else if (m.type() === 'error') out.consoleErrors.push(t);
  });
  if (o.hostile) {
    const h = o.hostile;
    const entry = { proto: 'esp', protoNum: 50, state: h, lan: h, lanPort: 0, remote: h, remotePort: 0, wan: h, aliasPort: 0,
      expiresInS: 1, redirect: false, replied: true, packetsOut: h, packetsIn: 0, spiOut: h, spiIn: h };
    await page.route('**/api/flows', (r) => r.fulfill({ contentType: 'application/json',
      body: JSON.stringify({ total: 1, shown: 1, limit: 1000, flows: [{ ...entry, proto: 'udp' }], vpn: [entry] }) }));
    await page.route('**/api/stats', async (r) => {
      const real = await (await r.fetch()).json();
      real.drops[h] = 7;
      real.wan.address = h;
      real.wan.history.push({ timeMs: real.timeMs, address: h });
      await r.fulfill({ contentType: 'application/json', body: JSON.stringify(real) });
    });
  }
  let resp;
  try {
    resp = await page.goto(o.url, { timeout: o.timeoutMs ?? 10_000, waitUntil: 'load' });
  } catch (e) {
    out.error = String(e.message ?? e).split('\n')[0];
  }
  if (resp) {
    out.status = resp.status();
    out.csp = resp.headers()['content-security-policy'] ?? null;
    out.loaded = true;
    const minSamples = o.minSamples ?? 3;
    // The chart has taken minSamples samples, the last with LAN → WAN traffic.
    if (!o.hostile) await page.waitForFunction((n) => {
      const c = document.getElementById('chart');
      return Number(c.dataset.samples) >= n && Number(c.dataset.lastOut) > 0;
    }, minSamples, { timeout: o.timeoutMs ?? 30_000, polling: 250 }).catch((e) => { out.error = 'chart: ' + String(e.message).split('\n')[0]; });
    if (o.hostile) {
      await page.waitForFunction((h) => document.getElementById('esp').tBodies[0].textContent.includes(h) &&
        document.getElementById('drops').tBodies[0].textContent.includes(h), o.hostile, { timeout: 20_000, polling: 250 })
        .catch((e) => { out.error = 'hostile: ' + String(e.message).split('\n')[0]; });
      out.title = await page.title();
      out.images = await page.$$eval('img, script:not([src]), iframe, a', (els) => els.length);
      out.hostileShownAsText = await page.$eval('#esp tbody td', (td) => td.textContent);
      out.wanText = await page.$eval('#wan', (el) => el.textContent);
    }
    if (o.expectEsp) {
      await page.waitForFunction((spi) => document.getElementById('esp').tBodies[0].textContent.includes(spi), o.expectEsp,
        { timeout: o.timeoutMs ?? 30_000, polling: 250 }).catch((e) => { out.error = 'esp: ' + String(e.message).split('\n')[0]; });
    }
    if (o.filterProto) {
      await page.selectOption('#fproto', o.filterProto);
      out.filteredProtos = await page.$$eval('#flows tbody tr', (rows) => [...new Set(rows.map((r) => r.cells[0].textContent))]);
      await page.selectOption('#fproto', '');
    }
    const rows = (id) => page.$$eval(`#${id} tbody tr`, (rs) => rs.map((r) => [...r.cells].map((c) => c.textContent)));
    const c = await page.$eval('#chart', (el) => ({ ...el.dataset }));
    const cb = await page.$eval('#chartbits', (el) => ({ ...el.dataset }));
    out.bitsSamples = Number(cb.samples);
    out.lastOutBits = Number(cb.lastOut);
    out.bitsText = await page.$eval('#bits-out', (el) => el.textContent);
    out.samples = Number(c.samples);
    out.lastOut = Number(c.lastOut);
    out.lastIn = Number(c.lastIn);
    out.esp = await rows('esp');
    out.ike = await rows('ike');
    out.drops = await rows('drops');
    out.tables = await rows('tables');
    out.flows = await rows('flows');
    out.wan = await page.$eval('#wan', (el) => el.textContent);
    // No element anywhere came from markup in the data: the tables hold text only.
    out.injected = await page.$$eval('td *:not(meter)', (els) => els.length);
    if (o.screenshot) await page.screenshot({ path: o.screenshot, fullPage: false });
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
