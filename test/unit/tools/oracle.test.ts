// The fuzzer's and property tests' oracle (src/tools/oracle.ts) on byte
// vectors: each check passes a right packet and names what is wrong in a
// broken one.
import { describe, expect, it } from 'vitest';
import { fixIp } from '../../../src/tools/mutate.js';
import { accountingProblems, addressProblems, passedProblems, subnetMatcher, validOutputProblems } from '../../../src/tools/oracle.js';
import { icmpError, quotedL4CsumOk, udp } from '../../helpers/packet.js';

const WAN = '203.0.113.1';
const isLan = subnetMatcher(['192.168.1.0/24', '10.20.0.0/16']);
/** What the engine would emit for `p`: TTL + 1, header checksum right. */
const emitted = (p: Uint8Array) => { const o = p.slice(); o[8] += 1; return fixIp(o); };

describe('oracle', () => {
  const sent = udp(WAN, 61000, '198.51.100.7', 53, [1, 2, 3, 4, 5]);

  it('passedProblems: a right output has none; TTL, header sum, L4 sum, length and padding are each caught', () => {
    expect(passedProblems(sent, emitted(sent))).toEqual([]);
    expect(passedProblems(sent, fixIp(sent.slice()))).toEqual(['TTL 64 became 64, not 65']);
    const badIp = emitted(sent); badIp[10] ^= 1;
    expect(passedProblems(sent, badIp)).toEqual(['IP header checksum wrong']);
    const badL4 = emitted(sent); badL4[27] ^= 1; // payload byte: the UDP sum no longer matches
    expect(passedProblems(sent, badL4)).toEqual(['L4 checksum right on input, wrong on output']);
    expect(passedProblems(sent, emitted(sent).subarray(0, 30))[0]).toMatch(/^length 33 became 30/);
    const padded = new Uint8Array([...sent, 0xaa, 0xbb]);
    const out = emitted(padded); out[34] = 0;
    expect(passedProblems(padded, out)).toEqual(['byte 34 past the total length 33 changed']);
    expect(validOutputProblems(sent, emitted(sent))).toEqual([]);
    expect(validOutputProblems(sent, badL4)).toEqual(['L4 checksum']);
  });

  it('quoted checksums of ICMP errors: the header always, the L4 sum when the whole datagram is quoted', () => {
    const full = icmpError('198.51.100.7', WAN, 3, 3, sent, 1000);
    expect(quotedL4CsumOk(full)).toBe(true);
    expect(quotedL4CsumOk(icmpError('198.51.100.7', WAN, 3, 3, sent, 8))).toBeNull();
    expect(passedProblems(full, emitted(full))).toEqual([]);
    // a quoted address byte changed: the quoted header sum no longer matches
    const out = emitted(full);
    out[20 + 8 + 12] ^= 0x01;
    expect(passedProblems(full, out)).toEqual(expect.arrayContaining(['quoted IP header checksum right on input, wrong on output']));
  });

  it('addressProblems: no LAN address leaves on the WAN side, nothing spoofed is delivered from it', () => {
    expect(addressProblems('out', emitted(sent), WAN, isLan)).toEqual([]);
    expect(addressProblems('out', udp('192.168.1.10', 1000, '198.51.100.7', 53), WAN, isLan))
      .toEqual(['left the WAN side with source 192.168.1.10, not the WAN address 203.0.113.1']);
    expect(addressProblems('out', udp(WAN, 1000, '10.20.3.4', 53), WAN, isLan))
      .toEqual(['left the WAN side addressed to the LAN address 10.20.3.4']);
    expect(addressProblems('out', udp(WAN, 1000, WAN, 53), WAN, isLan)).toEqual(['left the WAN side addressed to the WAN address itself (hairpin)']);
    expect(addressProblems('out', udp(WAN, 1000, '224.0.0.251', 5353), WAN, isLan)).toEqual(['left the WAN side addressed to multicast 224.0.0.251']);
    expect(addressProblems('out', udp(WAN, 1000, '255.255.255.255', 67), WAN, isLan)).toEqual(['left the WAN side addressed to the limited broadcast 255.255.255.255']);
    const inbound = udp('198.51.100.7', 53, '192.168.1.10', 1000);
    expect(addressProblems('out', icmpError(WAN, '198.51.100.7', 3, 3, inbound), WAN, isLan))
      .toEqual(['left the WAN side quoting the LAN address 192.168.1.10']);
    expect(addressProblems('in', inbound, WAN, isLan)).toEqual([]);
    expect(addressProblems('in', udp('192.168.1.11', 53, '192.168.1.10', 1000), WAN, isLan))
      .toEqual(['delivered from the WAN side with source 192.168.1.11']);
    expect(addressProblems('in', udp(WAN, 53, '192.168.1.10', 1000), WAN, isLan)).toHaveLength(1);
  });

  it('accountingProblems: rx = passed + dropped, each counted once', () => {
    const before = { rx: 10, pass: 5, drops: 5 };
    expect(accountingProblems(before, { rx: 14, pass: 8, drops: 6 }, 4, 3, 3)).toEqual([]);
    expect(accountingProblems(before, { rx: 13, pass: 8, drops: 6 }, 4, 3, 3)).toEqual(['rx moved by 3 for 4 packets']);
    expect(accountingProblems(before, { rx: 14, pass: 8, drops: 7 }, 4, 3, 3)).toEqual(['drops moved by 2, 1 dropped']);
    expect(accountingProblems(before, { rx: 14, pass: 7, drops: 7 }, 4, 3, 2)).toEqual([
      'process() returned 2, 3 verdicts pass', 'pass moved by 2, 3 passed', 'drops moved by 2, 1 dropped',
    ]);
  });
});
