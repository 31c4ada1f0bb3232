// The dashboard (web_listen): one HTML page, one stylesheet, one script,
// all served by vpnmasq itself (no CDN, no fonts, no inline script or style:
// the Content-Security-Policy in http.ts allows only these files and fetches
// to the same origin). The script polls /api/stats every second and
// /api/flows every two, draws the packet rates on a canvas by hand, and puts
// every value into the page with textContent, never as HTML.
//
// Rates are packets and bits per second of IP packets (the engine counts
// both per side, once per batch).

export const PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>vpnmasq</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>vpnmasq</h1>
  <div>WAN <b id="wan">…</b> · up <span id="uptime">…</span> · <span id="updated">connecting…</span></div>
</header>
<main>
<section class="wide">
  <h2>Throughput <small>packets/s</small></h2>
  <canvas id="chart" width="900" height="200" data-samples="0"></canvas>
  <div class="legend"><span class="out">■ LAN → WAN <b id="rate-out">0</b> pkt/s</span>
    <span class="in">■ WAN → LAN <b id="rate-in">0</b> pkt/s</span>
    <span class="drop">■ dropped <b id="rate-drop">0</b> pkt/s</span></div>
  <h2>Throughput <small>bits/s (IP)</small></h2>
  <canvas id="chartbits" width="900" height="200" data-samples="0"></canvas>
  <div class="legend"><span class="out">■ LAN → WAN <b id="bits-out">0</b></span>
    <span class="in">■ WAN → LAN <b id="bits-in">0</b></span></div>
</section>
<section>
  <h2>Tables</h2>
  <table id="tables"><thead><tr><th>table</th><th>use</th><th>in use</th><th>capacity</th></tr></thead><tbody></tbody></table>
  <h2>WAN address</h2>
  <table id="wanhist"><thead><tr><th>since</th><th>address</th></tr></thead><tbody></tbody></table>
  <p>changes: <b id="wanchanges">0</b> · reloads: <b id="reloads">0</b></p>
</section>
<section>
  <h2>Drops by reason</h2>
  <label><input type="checkbox" id="dropzeros"> show zeros</label>
  <table id="drops"><thead><tr><th>reason</th><th>packets</th></tr></thead><tbody></tbody></table>
</section>
<section class="wide">
  <h2>ESP associations <small>SPI pairs</small></h2>
  <table id="esp"><thead><tr><th>LAN host</th><th>server</th><th>SPI out</th><th>SPI in</th><th>state</th><th>expires</th><th>pkts out</th></tr></thead><tbody></tbody></table>
  <h2>IKE (UDP 500) <small>cookies</small></h2>
  <table id="ike"><thead><tr><th>LAN host</th><th>server</th><th>initiator cookie</th><th>responder cookie</th><th>expires</th><th>pkts out/in</th></tr></thead><tbody></tbody></table>
  <h2>PPTP calls <small>Call IDs</small></h2>
  <table id="pptp"><thead><tr><th>LAN host</th><th>server</th><th>LAN Call ID</th><th>alias</th><th>peer Call ID</th><th>state</th><th>expires</th></tr></thead><tbody></tbody></table>
</section>
<section class="wide">
  <h2>Flows <small id="flowcount"></small></h2>
  <div class="filters">
    <select id="fproto"><option value="">all protocols</option><option>tcp</option><option>udp</option><option>icmp</option><option>gre</option><option>esp</option></select>
    <input id="ftext" type="search" placeholder="address, port or state" autocomplete="off">
  </div>
  <table id="flows"><thead><tr><th>proto</th><th>state</th><th>LAN</th><th>remote</th><th>WAN port</th><th>expires</th><th>pkts out/in</th><th id="fbytes" hidden>bytes out/in</th></tr></thead><tbody></tbody></table>
</section>
</main>
</body>
</html>
`;

export const PAGE_CSS = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }
header { display: flex; align-items: baseline; gap: 2em; padding: .6em 1.2em; background: #1d2330; color: #fff; }
header h1 { margin: 0; font-size: 1.3em; }
main { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; padding: 1em; }
section { background: #fff; border: 1px solid #dde1e7; border-radius: 6px; padding: .6em 1em; overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
h2 { font-size: 1.05em; margin: .4em 0; } h2 small { font-weight: normal; color: #667; }
table { border-collapse: collapse; width: 100%; margin-bottom: .6em; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #eef0f3; font-variant-numeric: tabular-nums; }
td.num, th.num { text-align: right; }
td.mono { font-family: ui-monospace, monospace; }
tr.zero td { color: #aab; }
canvas { width: 100%; height: 200px; }
.legend span { margin-right: 1.5em; }
.out { color: #2563eb; } .in { color: #059669; } .drop { color: #dc2626; }
meter { width: 10em; }
.filters { margin-bottom: .4em; display: flex; gap: .6em; }
`;

export const PAGE_JS = `'use strict';
(function () {
  var HISTORY = 60;
  var samples = [];
  var last = null;

  function $(id) { return document.getElementById(id); }
  function set(id, v) { $(id).textContent = String(v); }
  function cell(tr, v, cls) { var td = document.createElement('td'); td.textContent = v == null ? '–' : String(v); if (cls) td.className = cls; tr.appendChild(td); return td; }
  function fill(tbody, rows, make) {
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { var tr = document.createElement('tr'); make(tr, r); frag.appendChild(tr); });
    tbody.replaceChildren(frag);
  }
  function secs(s) { s = Math.round(s); if (s < 120) return s + ' s'; if (s < 7200) return Math.round(s / 60) + ' min'; return Math.round(s / 3600) + ' h'; }
  function sum(o) { var n = 0; for (var k in o) n += o[k]; return n; }

  function bits(v) {
    var u = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'], i = 0;
    while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
    return (i ? v.toFixed(1) : Math.round(v)) + ' ' + u[i];
  }
  function draw(id, keys, label) {
    var c = $(id), g = c.getContext('2d');
    var w = c.width, h = c.height, pad = 40;
    g.clearRect(0, 0, w, h);
    var max = 1;
    samples.forEach(function (s) { keys.forEach(function (k) { max = Math.max(max, s[k[0]]); }); });
    var step = Math.pow(10, Math.floor(Math.log10(max))); var top = Math.ceil(max / step) * step;
    g.strokeStyle = '#e5e7eb'; g.fillStyle = '#667'; g.font = '11px sans-serif'; g.lineWidth = 1;
    for (var i = 0; i <= 4; i++) {
      var y = h - 20 - (h - 30) * i / 4;
      g.beginPath(); g.moveTo(pad, y); g.lineTo(w, y); g.stroke();
      g.fillText(label(top * i / 4), 2, y + 4);
    }
    function line(key, color) {
      g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
      samples.forEach(function (s, j) {
        var x = pad + (w - pad) * (j + HISTORY - samples.length) / (HISTORY - 1);
        var y = h - 20 - (h - 30) * s[key] / top;
        if (j === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    }
    keys.forEach(function (k) { line(k[0], k[1]); });
    g.fillStyle = '#667'; g.fillText('last ' + HISTORY + ' s', w - 60, h - 4);
  }

  function onStats(s) {
    var drops = sum(s.drops);
    if (last) {
      var dt = (s.timeMs - last.timeMs) / 1000;
      if (dt > 0) {
        var smp = { out: (s.forwarded.lan - last.forwarded.lan) / dt, in: (s.forwarded.wan - last.forwarded.wan) / dt, drop: (drops - last.drops) / dt,
          outBits: 8 * (s.forwardedBytes.lan - last.forwardedBytes.lan) / dt, inBits: 8 * (s.forwardedBytes.wan - last.forwardedBytes.wan) / dt };
        samples.push(smp);
        if (samples.length > HISTORY) samples.shift();
        set('rate-out', Math.round(smp.out)); set('rate-in', Math.round(smp.in)); set('rate-drop', Math.round(smp.drop));
        set('bits-out', bits(smp.outBits)); set('bits-in', bits(smp.inBits));
        var c = $('chart'), cb = $('chartbits');
        c.dataset.samples = cb.dataset.samples = String(samples.length);
        c.dataset.lastOut = String(smp.out); c.dataset.lastIn = String(smp.in);
        cb.dataset.lastOut = String(smp.outBits); cb.dataset.lastIn = String(smp.inBits);
        draw('chart', [['out', '#2563eb'], ['in', '#059669'], ['drop', '#dc2626']], function (v) { return String(Math.round(v)); });
        draw('chartbits', [['outBits', '#2563eb'], ['inBits', '#059669']], bits);
      }
    }
    if (!last || s.timeMs !== last.timeMs) last = { timeMs: s.timeMs, forwarded: s.forwarded, forwardedBytes: s.forwardedBytes, drops: drops };
    set('wan', s.wan.address || '(none)');
    set('uptime', secs((s.timeMs - s.startTimeMs) / 1000));
    set('updated', 'updated ' + new Date(s.timeMs).toLocaleTimeString());
    set('wanchanges', s.wan.changes); set('reloads', s.reloads.ok + s.reloads.failed);
    fill($('tables').tBodies[0], s.tables, function (tr, t) {
      cell(tr, t.table);
      var td = document.createElement('td'); var m = document.createElement('meter');
      m.max = t.capacity; m.value = t.used; m.high = t.capacity * 0.8; td.appendChild(m); tr.appendChild(td);
      cell(tr, t.used, 'num'); cell(tr, t.capacity, 'num');
    });
    fill($('wanhist').tBodies[0], s.wan.history.slice().reverse(), function (tr, hh) {
      cell(tr, new Date(hh.timeMs).toLocaleString()); cell(tr, hh.address || '(none)', 'mono');
    });
    renderDrops(s);
  }

  var lastStats = null;
  function renderDrops(s) {
    lastStats = s;
    var showZeros = $('dropzeros').checked;
    var reasons = Object.keys(s.drops).filter(function (r) { return showZeros || s.drops[r] > 0; });
    reasons.sort(function (a, b) { return s.drops[b] - s.drops[a]; });
    fill($('drops').tBodies[0], reasons, function (tr, r) {
      if (!s.drops[r]) tr.className = 'zero';
      cell(tr, r, 'mono'); cell(tr, s.drops[r], 'num');
    });
  }

  var flowsData = null;
  function renderFlows() {
    if (!flowsData) return;
    var d = flowsData;
    fill($('esp').tBodies[0], d.vpn.filter(function (v) { return v.proto === 'esp'; }), function (tr, v) {
      cell(tr, v.lan, 'mono'); cell(tr, v.remote, 'mono'); cell(tr, v.spiOut, 'mono'); cell(tr, v.spiIn, 'mono');
      cell(tr, v.state); cell(tr, secs(v.expiresInS), 'num'); cell(tr, v.packetsOut, 'num');
    });
    fill($('ike').tBodies[0], d.vpn.filter(function (v) { return v.state === 'IKE'; }), function (tr, v) {
      cell(tr, v.lan, 'mono'); cell(tr, v.remote + ':' + v.remotePort, 'mono'); cell(tr, v.icookie, 'mono'); cell(tr, v.rcookie, 'mono');
      cell(tr, secs(v.expiresInS), 'num'); cell(tr, v.packetsOut + ' / ' + v.packetsIn, 'num');
    });
    fill($('pptp').tBodies[0], d.vpn.filter(function (v) { return v.proto === 'gre'; }), function (tr, v) {
      cell(tr, v.lan, 'mono'); cell(tr, v.remote, 'mono'); cell(tr, v.callIdLan, 'num'); cell(tr, v.callIdAlias, 'num');
      cell(tr, v.callIdRemote, 'num'); cell(tr, v.state); cell(tr, secs(v.expiresInS), 'num');
    });
    var p = $('fproto').value, q = $('ftext').value.trim().toLowerCase();
    var rows = d.flows.filter(function (f) {
      if (p && f.proto !== p) return false;
      if (!q) return true;
      return [f.lan + ':' + f.lanPort, f.remote + ':' + f.remotePort, String(f.aliasPort), f.state.toLowerCase()].some(function (t) { return t.indexOf(q) >= 0; });
    });
    set('flowcount', rows.length + ' shown of ' + d.total + (d.total > d.shown ? ' (the first ' + d.limit + ' are listed)' : ''));
    // Bytes only with option acct (the flows then carry bytesOut/bytesIn).
    $('fbytes').hidden = !d.acct;
    fill($('flows').tBodies[0], rows, function (tr, f) {
      cell(tr, f.proto); cell(tr, f.state); cell(tr, f.lan + ':' + f.lanPort, 'mono'); cell(tr, f.remote + ':' + f.remotePort, 'mono');
      cell(tr, f.aliasPort, 'num'); cell(tr, secs(f.expiresInS), 'num'); cell(tr, f.packetsOut + ' / ' + f.packetsIn, 'num');
      if (d.acct) cell(tr, f.bytesOut + ' / ' + f.bytesIn, 'num');
    });
  }

  function get(path, cb) {
    fetch(path, { cache: 'no-store', credentials: 'omit' }).then(function (r) {
      if (!r.ok) throw new Error(path + ': ' + r.status);
      return r.json();
    }).then(cb).catch(function (e) { set('updated', String(e.message || e)); });
  }
  var tick = 0;
  function poll() {
    get('/api/stats', onStats);
    if (tick++ % 2 === 0) get('/api/flows', function (d) { flowsData = d; renderFlows(); });
  }
  $('fproto').addEventListener('change', renderFlows);
  $('ftext').addEventListener('input', renderFlows);
  $('dropzeros').addEventListener('change', function () { if (lastStats) renderDrops(lastStats); });
  poll();
  setInterval(poll, 1000);
})();
`;
