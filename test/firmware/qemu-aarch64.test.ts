// The aarch64 firmware image (Debian's arm64 kernel and packages, the TUN
// addon cross-compiled) under qemu-system-aarch64 -M virt (TCG, no guest
// firmware: -kernel boots it directly) as the router between network
// namespaces: the same suite as x86_64 (qemu-image.ts), every check of it.
// Under CI=true a missing qemu-system-aarch64 (Debian: qemu-system-arm)
// fails it.
import { describeQemuImage } from './qemu-image.js';

describeQemuImage({ arch: 'aarch64', qemu: 'qemu-system-aarch64', idPrefix: 'a', bootTimeoutS: 600 });
