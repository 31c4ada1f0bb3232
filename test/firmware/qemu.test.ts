// The x86_64 firmware image under QEMU (TCG) as the router between network
// namespaces: the shared suite of qemu-image.ts (core routing, raw ESP and
// PPTP of two LAN hosts, kill -9, a broken config, the WAN by DHCP).
import { describeQemuImage } from './qemu-image.js';

describeQemuImage({ arch: 'x86_64', qemu: 'qemu-system-x86_64', idPrefix: 't', bootTimeoutS: 300 });
