// Numbered VPN passthrough scenarios: what the VPN Masquerade HOWTO
// describes, and the limits it lists, removed. Every emitted packet's
// checksums are recomputed in full.
import { describe, expect, it } from 'vitest';
import { TestRouter, WAN, ok, pptpCall, router } from '../helpers/harness.js';
import {
  ACK, PSH, SYN, ah, esp, fragment, gre, greCallId, icmpError, ipCsumOk, isakmp, l4CsumOk, parse, pptpField, pptpMsg,
  quotedIpCsumOk, spiOf, tcp, udp,
} from '../helpers/packet.js';

const A = '192.168.1.10';
const B = '192.168.1.11';
const C = '192.168.1.12';
const SRV = '198.51.100.7';
const SRV2 = '198.51.100.8';
const CK_A = '0a0a0a0a0a0a0a0a';
const CK_B = '0b0b0b0b0b0b0b0b';
const CK_R = 'dddddddddddddddd';


describe('IKE on UDP 500', () => {
  it('V01 two LAN hosts talk IKE to one server from port 500 at once; both keep port 500; replies routed by cookie', () => {
    const r = router();
    const a = parse(ok(r.out(isakmp(A, 500, SRV, 500, CK_A))));
    const b = parse(ok(r.out(isakmp(B, 500, SRV, 500, CK_B))));
    expect([a.src, a.sport, b.src, b.sport]).toEqual([WAN, 500, WAN, 500]);
    const ra = parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R))));
    const rb = parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_B, 'eeeeeeeeeeeeeeee'))));
    expect([ra.dst, ra.dport]).toEqual([A, 500]);
    expect([rb.dst, rb.dport]).toEqual([B, 500]);
    // the responder cookie, once seen, must match too
    expect(r.in(isakmp(SRV, 500, WAN, 500, CK_A, 'ffffffffffffffff'))).toBeNull();
    expect(r.drop('isakmp_cookie_collision')).toBe(1);
    const ent = r.vpnEntries().filter((e) => e.state === 'IKE');
    expect(ent.map((e) => [e.lan, e.icookie, e.rcookie]).sort()).toEqual([
      [A, CK_A, CK_R], [B, CK_B, 'eeeeeeeeeeeeeeee'],
    ]);
  });

  it('V02 a second host reusing an outstanding initiator cookie is dropped and counted, never misrouted', () => {
    const r = router();
    ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
    expect(r.out(isakmp(B, 500, SRV, 500, CK_A))).toBeNull();
    expect(r.drop('isakmp_cookie_collision')).toBe(1);
    expect(parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R)))).dst).toBe(A);
    // the same cookie toward another server is a different exchange
    ok(r.out(isakmp(B, 500, SRV2, 500, CK_A)));
  });

  it('V03 truncated ISAKMP and zero cookies are dropped', () => {
    const r = router();
    expect(r.out(udp(A, 500, SRV, 500, new Array(20).fill(1)))).toBeNull();
    expect(r.drop('isakmp_truncated')).toBe(1);
    expect(r.out(isakmp(A, 500, SRV, 500, '0000000000000000'))).toBeNull();
    expect(r.in(isakmp(SRV, 500, WAN, 500, '0000000000000000', CK_R))).toBeNull();
    expect(r.drop('isakmp_zero_cookie')).toBe(2);
    // unsolicited IKE with an unknown cookie: refused
    expect(r.in(isakmp(SRV, 500, WAN, 500, CK_B))).toBeNull();
    expect(r.drop('no_flow')).toBe(1);
  });

  it('V04b a silent IKE session lives on while its host still has ESP with that server (HOWTO §5.7)', () => {
    const r = router();
    ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
    ok(r.out(esp(A, SRV, 0x1111)));
    ok(r.in(esp(SRV, WAN, 0xaaaa)));
    for (let t = 0; t < 5; t++) { r.advance(1000); ok(r.out(esp(A, SRV, 0x1111, t + 2))); } // 5000 s of ESP, IKE silent
    expect(parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R)))).dst).toBe(A); // the server's rekey still finds A
    r.advance(1801 + 3601);
    expect(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R))).toBeNull();
  });

  it('V04 IKE entries outlive the ESP table (ike_timeout ≥ esp_timeout), and expire after', () => {
    const r = router();
    ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
    r.advance(1799);
    expect(parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R)))).dst).toBe(A);
    r.advance(3601);
    expect(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R))).toBeNull();
  });
});

describe('ESP without NAT-T (HOWTO §6.2, improved)', () => {
  it('V05 a new outbound SPI is outstanding until the first unknown inbound SPI from that server binds to it', () => {
    const r = router();
    expect(parse(ok(r.out(esp(A, SRV, 0x1111)))).src).toBe(WAN);
    expect(r.vpnEntries()).toMatchObject([{ proto: 'esp', state: 'OUTSTANDING', lan: A, spiOut: '0x00001111', spiIn: null }]);
    const i = ok(r.in(esp(SRV, WAN, 0xaaaa)));
    expect(parse(i).dst).toBe(A);
    expect(spiOf(i)).toBe(0xaaaa);
    expect(r.vpnEntries()).toMatchObject([{ state: 'ESTABLISHED', spiIn: '0x0000aaaa' }]);
    ok(r.out(esp(A, SRV, 0x1111, 2)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa, 2)))).dst).toBe(A);
  });

  it('V06 two LAN hosts to the same server: the second waits while the first is outstanding, then both get all their traffic', () => {
    const r = router();
    ok(r.out(esp(A, SRV, 0x1111)));
    expect(r.out(esp(B, SRV, 0x2222))).toBeNull();
    expect(r.drop('esp_serialized')).toBe(1);
    // another server is not affected
    ok(r.out(esp(C, SRV2, 0x3333)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa)))).dst).toBe(A);
    ok(r.out(esp(B, SRV, 0x2222)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb)))).dst).toBe(B);
    for (let n = 0; n < 5; n++) {
      expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa, n + 2)))).dst).toBe(A);
      expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb, n + 2)))).dst).toBe(B);
      ok(r.out(esp(A, SRV, 0x1111, n + 2)));
      ok(r.out(esp(B, SRV, 0x2222, n + 2)));
    }
  });

  it('V07 SPI 0, reserved SPIs and truncated ESP are dropped both ways', () => {
    const r = router();
    expect(r.out(esp(A, SRV, 0))).toBeNull();
    expect(r.in(esp(SRV, WAN, 0))).toBeNull();
    expect(r.drop('esp_spi_zero')).toBe(2);
    expect(r.out(esp(A, SRV, 7))).toBeNull();
    expect(r.in(esp(SRV, WAN, 255))).toBeNull();
    expect(r.drop('esp_spi_reserved')).toBe(2);
    expect(r.out(esp(A, SRV, 0x1111, 1, 0))).toBeNull(); // SPI and sequence only
    expect(r.drop('truncated')).toBe(1);
    expect(r.vpnEntries()).toEqual([]);
  });

  it('V08 a host spraying new SPIs is squelched after the retries and blocks others no longer', () => {
    const r = router();
    ok(r.out(esp(A, SRV, 0x1111)));
    // retries a second apart: packets of one burst count as one try (V08c)
    for (let n = 0; n < 5; n++) { r.advance(1); ok(r.out(esp(A, SRV, 0x1111, n + 2))); }
    r.advance(1);
    expect(r.out(esp(A, SRV, 0x1111, 7))).toBeNull(); // sixth retry
    expect(r.drop('esp_squelched')).toBe(1);
    // B is free to go now
    ok(r.out(esp(B, SRV, 0x2222)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb)))).dst).toBe(B);
    // A stays paused for 30 s, then may try again
    expect(r.out(esp(A, SRV, 0x1111, 8))).toBeNull();
    r.advance(31);
    ok(r.out(esp(A, SRV, 0x1111, 9)));
  });

  it('V08b a host spraying many different new SPIs is squelched just the same', () => {
    const r = router();
    let passed = 0;
    for (let n = 0; n < 20; n++) if (r.out(esp(A, SRV, 0x10000 + n))) passed++;
    expect(passed).toBe(6); // the first and its 5 retries
    expect(r.drop('esp_squelched')).toBe(14);
    ok(r.out(esp(B, SRV, 0x2222)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb)))).dst).toBe(B);
  });

  it('V08c a burst on a new SPI before the server\'s first reply is one try, not a retry each: bound, no squelch (SA up, then a rekey)', () => {
    const r = router();
    // 1,000 pps for 50 ms of round trip: 50 packets on the new SPI within 100 ms
    for (let n = 0; n < 50; n++) { expect(parse(ok(r.out(esp(A, SRV, 0x1111, n + 1)))).src).toBe(WAN); r.advance(0.002); }
    expect(r.vpnEntries()).toMatchObject([{ proto: 'esp', state: 'OUTSTANDING', lan: A, spiOut: '0x00001111' }]);
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa)))).dst).toBe(A);
    for (let n = 0; n < 20; n++) {
      ok(r.out(esp(A, SRV, 0x1111, n + 51)));
      expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa, n + 2)))).dst).toBe(A);
    }
    // rekey a minute later: a new SPI pair, the new outbound one again in a burst
    r.advance(60);
    for (let n = 0; n < 50; n++) { ok(r.out(esp(A, SRV, 0x1112, n + 1))); r.advance(0.002); }
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaab)))).dst).toBe(A);
    ok(r.out(esp(A, SRV, 0x1112, 51)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaab, 2)))).dst).toBe(A);
    expect(r.drop('esp_squelched')).toBe(0);
    expect(r.vpnEntries().filter((e) => e.proto === 'esp')).toMatchObject([
      { state: 'ESTABLISHED', lan: A, spiOut: '0x00001111', spiIn: '0x0000aaaa' },
      { state: 'ESTABLISHED', lan: A, spiOut: '0x00001112', spiIn: '0x0000aaab' },
    ]);
  });

  it('V08d a host sending every 300 ms with no answer for longer than retries × 1 s is squelched; another host then gets its turn', () => {
    const r = router();
    let sent = 0;
    let squelchedAt = -1; // simulated ms since the first packet
    let bWaited = 0;
    for (let t = 0; t <= 20_000 && squelchedAt < 0; t += 300) {
      if (r.out(esp(A, SRV, 0x1111, ++sent))) {
        if (t > 0 && r.out(esp(B, SRV, 0x2222)) === null) bWaited++; // A's SPI is outstanding: B waits
      } else squelchedAt = t;
      r.advance(0.3);
    }
    expect(r.drop('esp_squelched')).toBe(1);
    expect(r.drop('esp_serialized')).toBe(bWaited);
    expect(bWaited).toBeGreaterThan(5);
    // five retries at least a second apart, and not later than the sixth 300 ms step after the fifth second
    expect(squelchedAt).toBeGreaterThanOrEqual(5 * 1000);
    expect(squelchedAt).toBeLessThanOrEqual(6 * 1200);
    expect(r.out(esp(A, SRV, 0x1111, ++sent))).toBeNull();
    // B's turn now
    ok(r.out(esp(B, SRV, 0x2222)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb)))).dst).toBe(B);
    ok(r.out(esp(B, SRV, 0x2222, 2)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb, 2)))).dst).toBe(B);
  });

  it('V08e a host flooding its unanswered SPI (100 packets a second) is squelched after retries × 1 s all the same', () => {
    const r = router();
    let squelchedAt = -1;
    for (let t = 0; t <= 20_000 && squelchedAt < 0; t += 10) {
      if (!r.out(esp(A, SRV, 0x1111, t / 10 + 1))) squelchedAt = t;
      r.advance(0.01);
    }
    expect(squelchedAt).toBeGreaterThanOrEqual(6 * 1000);
    expect(squelchedAt).toBeLessThan(7 * 1000);
    expect(r.drop('esp_squelched')).toBe(1);
    ok(r.out(esp(B, SRV, 0x2222)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb)))).dst).toBe(B);
  });

  it('V09 an outstanding entry gives up after esp_init_timeout; unanswered, nobody waits longer', () => {
    const r = router();
    ok(r.out(esp(A, SRV, 0x1111)));
    r.advance(100);
    expect(r.out(esp(B, SRV, 0x2222))).toBeNull();
    r.advance(21);
    ok(r.out(esp(B, SRV, 0x2222)));
  });

  it('V10 binding prefers the LAN host whose IKE exchange with that server is most recent', () => {
    const r = new TestRouter();
    r.vpn({ parallel: true });
    ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
    r.advance(2);
    ok(r.out(isakmp(B, 500, SRV, 500, CK_B)));
    ok(r.out(esp(A, SRV, 0x1111)));
    ok(r.out(esp(B, SRV, 0x2222))); // parallel_sessions: not serialised
    expect(parse(ok(r.in(esp(SRV, WAN, 0xbbbb)))).dst).toBe(B);
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa)))).dst).toBe(A);
  });

  it('V11 unknown inbound SPIs with nothing outstanding are dropped; esp_guess hands them to the latest IKE peer without binding', () => {
    const r = router();
    expect(r.in(esp(SRV, WAN, 0x9999))).toBeNull();
    expect(r.drop('esp_no_sa')).toBe(1);
    const g = new TestRouter();
    g.vpn({ guess: true });
    ok(g.out(isakmp(B, 500, SRV, 500, CK_B)));
    expect(parse(ok(g.in(esp(SRV, WAN, 0x9999)))).dst).toBe(B);
    expect(g.vpnEntries().filter((e) => e.proto === 'esp')).toEqual([]);
  });

  it('V12 the ESP association expires after esp_timeout of silence', () => {
    const r = router();
    ok(r.out(esp(A, SRV, 0x1111)));
    ok(r.in(esp(SRV, WAN, 0xaaaa)));
    r.advance(1700);
    ok(r.in(esp(SRV, WAN, 0xaaaa, 2)));
    r.advance(1801);
    expect(r.in(esp(SRV, WAN, 0xaaaa, 3))).toBeNull();
  });
});

describe('NAT-T, AH', () => {
  it('V13 NAT-T: many clients to one server on UDP 4500, distinct WAN ports, keepalives keep the mapping for natt_timeout', () => {
    const r = router();
    const a = parse(ok(r.out(udp(A, 4500, SRV, 4500, [0, 0, 0, 0, 1, 2, 3, 4]))));
    const b = parse(ok(r.out(udp(B, 4500, SRV, 4500, [0, 0, 0, 0, 1, 2, 3, 4]))));
    expect(a.sport).toBe(4500);
    expect(b.sport).not.toBe(4500);
    for (let t = 0; t < 20; t++) { r.advance(20); ok(r.out(udp(B, 4500, SRV, 4500, [0xff]))); } // 1-byte keepalives
    expect(parse(ok(r.in(udp(SRV, 4500, WAN, b.sport, [1, 1, 1, 1])))).dst).toBe(B);
    expect(r.in(udp(SRV, 4500, WAN, 4500, [1, 1, 1, 1]))).toBeNull(); // A was silent for 400 s > 300
    expect(r.engine.flows(WAN).find((f) => f.lan === B)!.expiresInS).toBeGreaterThan(250);
  });

  it('V14 translated AH is dropped, counted, and reported once per flow; the router\'s own AH passes', () => {
    const r = router();
    expect(r.out(ah(A, SRV, 0x5555))).toBeNull();
    expect(r.out(ah(A, SRV, 0x5555))).toBeNull();
    expect(r.drop('ah_translated')).toBe(2);
    const evs = r.engine.drainEvents().filter((e) => e.type === 'ah_refused');
    expect(evs.length).toBe(1);
    expect(evs[0]).toMatchObject({ lan: A, remote: SRV });
    expect(parse(ok(r.out(ah(WAN, SRV, 0x6666)))).src).toBe(WAN);
  });
});

describe('PPTP and enhanced GRE', () => {
  // A PPTP call from `host` (PNS) to SRV: control connection + Outgoing-Call-Request.
  const call = (r: TestRouter, host: string, sport: number, callId: number) => pptpCall(r, host, SRV, sport, callId);

  it('V15 two LAN clients call one server with the same Call ID; each gets its own GRE', () => {
    const r = router();
    const a = call(r, A, 40000, 1);
    const b = call(r, B, 40000, 1);
    expect(a.alias).toBe(1);
    expect(b.alias).not.toBe(1);
    // Outgoing-Call-Reply: server's Call ID 700 / 701, peer = our alias → back to 1
    const ra = ok(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, pptpMsg(8, 700, a.alias))));
    const rb = ok(r.in(tcp(SRV, 1723, WAN, b.wanPort, PSH | ACK, pptpMsg(8, 701, b.alias))));
    expect([parse(ra).dst, pptpField(ra, 14)]).toEqual([A, 1]);
    expect([parse(rb).dst, pptpField(rb, 14)]).toEqual([B, 1]);
    // GRE from the server, keyed by the alias, reaches each client with its own Call ID
    const ga = ok(r.in(gre(SRV, WAN, a.alias)));
    const gb = ok(r.in(gre(SRV, WAN, b.alias)));
    expect([parse(ga).dst, greCallId(ga)]).toEqual([A, 1]);
    expect([parse(gb).dst, greCallId(gb)]).toEqual([B, 1]);
    // GRE from the clients carries the server's Call IDs, unchanged
    const oa = ok(r.out(gre(A, SRV, 700)));
    expect([parse(oa).src, greCallId(oa)]).toEqual([WAN, 700]);
    ok(r.out(gre(B, SRV, 701)));
    expect(r.out(gre(A, SRV, 701))).toBeNull(); // A has no call 701
    expect(r.drop('gre_no_call')).toBe(1);
    const calls = r.vpnEntries().filter((e) => e.proto === 'gre');
    expect(calls.map((c) => [c.lan, c.callIdLan, c.callIdRemote]).sort()).toEqual([[A, 1, 700], [B, 1, 701]]);
  });

  it('V16 Call IDs in every message that carries one are translated, with the TCP checksum adjusted', () => {
    const r = router();
    const a = call(r, A, 40001, 5);
    call(r, B, 40001, 5);
    const b2 = call(r, B, 40002, 9); // B's second call
    ok(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, pptpMsg(8, 800, a.alias))));
    // Set-Link-Info from the client names the server's Call ID: unchanged
    expect(pptpField(ok(r.out(tcp(A, 40001, SRV, 1723, PSH | ACK, pptpMsg(15, 800)))), 12)).toBe(800);
    // WAN-Error-Notify / Set-Link-Info / Incoming-Call-Connected from the server name ours: mapped back
    for (const t of [14, 15, 11]) {
      const m = ok(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, pptpMsg(t, a.alias))));
      expect(pptpField(m, 12)).toBe(5);
    }
    // two messages in one segment
    const two = ok(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, [...pptpMsg(14, a.alias), ...pptpMsg(15, a.alias)])));
    expect([pptpField(two, 12, 0), pptpField(two, 12, 1)]).toEqual([5, 5]);
    // Call-Clear-Request from the client: its own Call ID → alias
    const ccrq = ok(r.out(tcp(B, 40002, SRV, 1723, PSH | ACK, pptpMsg(12, 9))));
    expect(pptpField(ccrq, 12)).toBe(b2.alias);
  });

  it('V17 malformed control messages are dropped before anything is touched', () => {
    const r = router();
    const a = call(r, A, 40000, 1);
    const cases: [number[], string][] = [
      [pptpMsg(8, 700, a.alias, { magic: 0x1a2b3c4e }), 'pptp_bad_magic'],
      [pptpMsg(8, 700, a.alias, { length: 30 }), 'pptp_bad_length'],
      [pptpMsg(8, 700, a.alias).slice(0, 20), 'pptp_bad_length'],
      [pptpMsg(8, 700, a.alias).slice(0, 10), 'pptp_bad_length'],
      [pptpMsg(16, 700, a.alias, { length: 32 }), 'pptp_bad_type'],
      [pptpMsg(0, 700, a.alias, { length: 32 }), 'pptp_bad_type'],
      [pptpMsg(8, 700, a.alias, { msgType: 2 }), 'pptp_bad_type'],
      [[...pptpMsg(8, 700, a.alias), ...pptpMsg(15, a.alias).slice(0, 12)], 'pptp_bad_length'],
    ];
    for (const [msg, reason] of cases) {
      const before = r.drop(reason);
      expect(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, msg))).toBeNull();
      expect(r.drop(reason)).toBe(before + 1);
    }
    // none of them bound the server's Call ID 700
    expect(r.vpnEntries().find((e) => e.proto === 'gre')!.callIdRemote).toBeNull();
    // an alias nobody has
    expect(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, pptpMsg(8, 700, 4242)))).toBeNull();
    expect(r.drop('pptp_no_call')).toBe(1);
  });

  it('V18 GRE that is not PPTP\'s (version, protocol) is dropped', () => {
    const r = router();
    const a = call(r, A, 40000, 1);
    expect(r.in(gre(SRV, WAN, a.alias, 20, { version: 0 }))).toBeNull();
    expect(r.in(gre(SRV, WAN, a.alias, 20, { protocol: 0x0800 }))).toBeNull();
    expect(r.out(gre(A, SRV, 1, 20, { version: 2 }))).toBeNull();
    expect(r.drop('gre_bad_header')).toBe(3);
  });

  it('V19 a disconnect ages the GRE mapping out in 30 s', () => {
    const r = router();
    const a = call(r, A, 40000, 1);
    ok(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, pptpMsg(8, 700, a.alias))));
    ok(r.in(tcp(SRV, 1723, WAN, a.wanPort, PSH | ACK, pptpMsg(13, 700)))); // Call-Disconnect-Notify
    ok(r.in(gre(SRV, WAN, a.alias)));
    r.advance(31);
    expect(r.in(gre(SRV, WAN, a.alias))).toBeNull();
  });
});

describe('servers behind the router, the router as endpoint', () => {
  it('V20 a protocol forward for ESP coexists with masqueraded ESP clients: told apart by SPI', () => {
    const r = router();
    r.protoForward(50, C);
    ok(r.out(esp(A, SRV, 0x1111)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa)))).dst).toBe(A); // A's outstanding binds first
    expect(parse(ok(r.in(esp(SRV2, WAN, 0x7777)))).dst).toBe(C); // a client of the server behind the router
    expect(parse(ok(r.out(esp(C, SRV2, 0x8888)))).src).toBe(WAN);
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa, 2)))).dst).toBe(A);
    expect(parse(ok(r.in(esp(SRV2, WAN, 0x7777, 2)))).dst).toBe(C);
    // the server's outbound SPIs never make LAN clients wait
    ok(r.out(esp(B, SRV2, 0x2222)));
  });

  it('V21 a PPTP server behind the router and PPTP clients at the same time', () => {
    const r = router();
    r.redirect(6, 1723, C, 1723);
    r.protoForward(47, C);
    // LAN client B calls SRV
    const syn = parse(ok(r.out(tcp(B, 40000, SRV, 1723, SYN))));
    ok(r.in(tcp(SRV, 1723, WAN, syn.sport, SYN | ACK)));
    const bAlias = pptpField(ok(r.out(tcp(B, 40000, SRV, 1723, PSH | ACK, pptpMsg(7, 1)))), 12);
    ok(r.in(tcp(SRV, 1723, WAN, syn.sport, PSH | ACK, pptpMsg(8, 300, bAlias))));
    // remote client SRV2 calls the server C behind the router
    expect(parse(ok(r.in(tcp(SRV2, 50000, WAN, 1723, SYN)))).dst).toBe(C);
    ok(r.out(tcp(C, 1723, SRV2, 50000, SYN | ACK)));
    ok(r.in(tcp(SRV2, 50000, WAN, 1723, PSH | ACK, pptpMsg(7, 1)))); // OCRQ, remote's Call ID 1
    const ocrp = ok(r.out(tcp(C, 1723, SRV2, 50000, PSH | ACK, pptpMsg(8, 1, 1)))); // server's Call ID 1, peer 1
    const cAlias = pptpField(ocrp, 12);
    expect(pptpField(ocrp, 14)).toBe(1);
    // GRE both ways for both calls
    expect([parse(ok(r.in(gre(SRV2, WAN, cAlias)))).dst]).toEqual([C]);
    expect(greCallId(ok(r.in(gre(SRV2, WAN, cAlias))))).toBe(1);
    expect(parse(ok(r.in(gre(SRV, WAN, bAlias)))).dst).toBe(B);
    ok(r.out(gre(C, SRV2, 1)));
    ok(r.out(gre(B, SRV, 300)));
  });

  it('V22 the router\'s own IKE and ESP: accepted by rules, not translated', () => {
    const r = router();
    expect(r.in(isakmp(SRV, 500, WAN, 500, CK_A))).toBeNull();
    r.acceptToRouter(17, 500, 500);
    r.acceptToRouter(50);
    const i = parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A))));
    expect([i.dst, i.dport]).toEqual([WAN, 500]);
    const o = parse(ok(r.out(isakmp(WAN, 500, SRV, 500, CK_A, CK_R))));
    expect([o.src, o.sport]).toEqual([WAN, 500]);
    expect(parse(ok(r.in(isakmp(SRV, 500, WAN, 500, CK_A, CK_R)))).dst).toBe(WAN);
    expect(parse(ok(r.in(esp(SRV, WAN, 0x4444)))).dst).toBe(WAN);
    expect(parse(ok(r.out(esp(WAN, SRV, 0x5555)))).src).toBe(WAN);
    // an unknown SPI from that server goes to the router while its IKE is the latest ...
    ok(r.out(esp(A, SRV, 0x1111)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0x4445)))).dst).toBe(WAN);
    // ... and to the LAN host once the host's IKE exchange with it is more recent
    r.advance(1);
    ok(r.out(isakmp(A, 500, SRV, 500, CK_B)));
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa)))).dst).toBe(A);
    expect(parse(ok(r.in(esp(SRV, WAN, 0xaaaa, 2)))).dst).toBe(A);
  });

  it('V23 large fragmented IKE messages (certificates) pass both ways', () => {
    const r = router();
    const big = fragment(isakmp(A, 500, SRV, 500, CK_A, undefined, 3000, { id: 0x1001 }), 1480);
    for (const f of r.batch(big, 0)) expect(parse(f!).src).toBe(WAN);
    const back = fragment(isakmp(SRV, 500, WAN, 500, CK_A, CK_R, 3000, { id: 0x2002 }), 1480);
    for (const f of r.batch(back, 1)) expect(parse(f!).dst).toBe(A);
  });

  it('V23b fragmented ESP passes both ways once the association is known', () => {
    const r = router();
    ok(r.out(esp(A, SRV, 0x1111)));
    ok(r.in(esp(SRV, WAN, 0xaaaa)));
    const big = (src: string, dst: string, spi: number, id: number) => {
      const p = esp(src, dst, spi, 9, 3000);
      p[4] = id >> 8; p[5] = id & 0xff; // a distinct IP ID (the header checksum is rebuilt by fragment())
      return fragment(p, 1480);
    };
    const outs = r.batch(big(A, SRV, 0x1111, 0x3003), 0);
    expect(outs.every((f) => f !== null && parse(f).src === WAN)).toBe(true);
    const ins = r.batch(big(SRV, WAN, 0xaaaa, 0x4004), 1);
    expect(ins.every((f) => f !== null && parse(f).dst === A && ipCsumOk(f))).toBe(true);
    // a later fragment of an unknown datagram does not get in
    expect(r.in(big(SRV, WAN, 0xaaaa, 0x5005)[1]!)).toBeNull();
    expect(r.drop('frag_no_head')).toBe(1);
  });

  it('V25 ICMP errors about VPN traffic (path MTU for ESP, GRE, IKE) reach the host whose SA, call or exchange they quote', () => {
    const r = router();
    ok(r.out(esp(A, SRV, 0x1111)));
    ok(r.in(esp(SRV, WAN, 0xaaaa)));
    ok(r.out(esp(B, SRV, 0x2222)));
    ok(r.in(esp(SRV, WAN, 0xbbbb)));
    const sentB = ok(r.out(esp(B, SRV, 0x2222, 2, 1400)));
    const fragNeeded = (quoted: Uint8Array, quote = 8) => icmpError('198.51.100.1', WAN, 3, 4, quoted, quote);
    const e1 = ok(r.in(fragNeeded(sentB)));
    expect(parse(e1).dst).toBe(B);
    expect(quotedIpCsumOk(e1)).toBe(true);
    expect(parse(parse(e1).l4.subarray(8)).src).toBe(B);
    // GRE of a PPTP call
    const syn = parse(ok(r.out(tcp(C, 40000, SRV, 1723, SYN))));
    ok(r.in(tcp(SRV, 1723, WAN, syn.sport, SYN | ACK)));
    const alias = pptpField(ok(r.out(tcp(C, 40000, SRV, 1723, PSH | ACK, pptpMsg(7, 3)))), 12);
    ok(r.in(tcp(SRV, 1723, WAN, syn.sport, PSH | ACK, pptpMsg(8, 900, alias))));
    const g = ok(r.in(fragNeeded(ok(r.out(gre(C, SRV, 900, 1400))))));
    expect(parse(g).dst).toBe(C);
    // IKE from port 500: routed by the quoted cookie, or dropped when the quote ends before it
    ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
    const ikeB = ok(r.out(isakmp(B, 500, SRV, 500, CK_B)));
    const i1 = ok(r.in(fragNeeded(ikeB, 68))); // the whole datagram quoted: its UDP checksum can be checked
    expect([parse(i1).dst, parse(parse(i1).l4.subarray(8)).src]).toEqual([B, B]);
    expect(l4CsumOk(parse(i1).l4.subarray(8))).toBe(true);
    expect(r.in(fragNeeded(ikeB, 8))).toBeNull();
    expect(r.drop('icmp_no_flow')).toBe(1);
  });

  it('V24 a new WAN address flushes ESP, IKE and PPTP state too', () => {
    const r = router();
    ok(r.out(isakmp(A, 500, SRV, 500, CK_A)));
    ok(r.out(esp(A, SRV, 0x1111)));
    expect(r.vpnEntries().length).toBe(2);
    r.engine.x.setWanAddress(0x050071cb, r.now);
    expect(r.vpnEntries().length).toBe(0);
  });
});
