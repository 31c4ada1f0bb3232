// A traffic peer for the QEMU checks (firmware/qemu-run.sh, test/firmware/qemu.test.ts),
// run with the host's node inside a namespace.
// udp-serve|tcp-serve PORT: answer each datagram / connection with "peer ADDR:PORT".
// udp-ask|tcp-ask HOST PORT: send, print the answer, exit 0; exit 1 after 5 s.
import dgram from 'node:dgram';
import net from 'node:net';
const [mode, a, b] = process.argv.slice(2);
const fail = (m) => { console.error(m); process.exit(1); };
if (mode === 'udp-serve') {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(`peer ${r.address}:${r.port}`, r.port, r.address));
  s.bind(Number(a), () => console.log('listening'));
} else if (mode === 'tcp-serve') {
  net.createServer((c) => { c.end(`peer ${c.remoteAddress}:${c.remotePort}`); c.on('error', () => {}); })
    .listen(Number(a), '0.0.0.0', () => console.log('listening'));
} else if (mode === 'udp-ask') {
  const s = dgram.createSocket('udp4');
  const t = setInterval(() => s.send('hello', Number(b), a), 1000);
  s.on('message', (m) => { console.log(String(m)); clearInterval(t); s.close(); });
  s.send('hello', Number(b), a);
  setTimeout(() => fail('no answer'), 5000).unref();
} else if (mode === 'tcp-ask') {
  let out = '';
  const c = net.connect(Number(b), a);
  c.on('data', (d) => { out += d; });
  c.on('end', () => { console.log(out); process.exit(0); });
  c.on('error', (e) => fail(e.message));
  setTimeout(() => fail('no answer'), 5000).unref();
}
