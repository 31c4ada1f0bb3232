// Pure decisions of the supervisor (src/supervisor.ts) that need no router.
import { afterEach, describe, expect, it } from 'vitest';
import { HOST_QUEUES_AUTO, HOST_QUEUES_MIN_RAM, hostQueuesWanted } from '../../src/supervisor.js';

describe('hostQueuesWanted: option host_queues, and VPNMASQ_HOST_QUEUES over it', () => {
  afterEach(() => { delete process.env.VPNMASQ_HOST_QUEUES; });

  it("'auto' is 8 rings with 384 MiB of RAM or more, one below, and says why", () => {
    expect(hostQueuesWanted('auto', HOST_QUEUES_MIN_RAM)).toEqual({ queues: HOST_QUEUES_AUTO, note: '' });
    expect(hostQueuesWanted('auto', 24 * 1024 * 1048576)).toEqual({ queues: 8, note: '' });
    // the 256 MiB image's kernel leaves 206 MiB to hand out
    expect(hostQueuesWanted('auto', 206 * 1048576)).toEqual({ queues: 1, note: 'auto: 206 MiB of RAM, 384 MiB or more for 8' });
  });

  it('a number is taken as given, whatever the RAM', () => {
    expect(hostQueuesWanted(16, 206 * 1048576)).toEqual({ queues: 16, note: '' });
    expect(hostQueuesWanted(1, HOST_QUEUES_MIN_RAM)).toEqual({ queues: 1, note: '' });
  });

  it('the environment overrides both ways; anything but 1, 2, 4, 8 or 16 there is refused', () => {
    process.env.VPNMASQ_HOST_QUEUES = '1';
    expect(hostQueuesWanted('auto', HOST_QUEUES_MIN_RAM)).toEqual({ queues: 1, note: '' });
    process.env.VPNMASQ_HOST_QUEUES = '4';
    expect(hostQueuesWanted(1, 206 * 1048576)).toEqual({ queues: 4, note: '' });
    for (const bad of ['3', '32', 'auto', '8x']) {
      process.env.VPNMASQ_HOST_QUEUES = bad;
      expect(() => hostQueuesWanted('auto')).toThrow(`VPNMASQ_HOST_QUEUES must be 1, 2, 4, 8 or 16, not "${bad}"`);
    }
  });
});
