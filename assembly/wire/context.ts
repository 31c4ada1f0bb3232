// The packet context: what the checked views found out about the packet in
// hand, in a small record in linear memory that the per-packet path hands
// explicitly to whoever needs it (libalias passes its handlers alias_data
// the same way), instead of module globals that a check fills and later
// code reads. One record: the engine handles one packet at a time.
//
// Fields (u32 each):
export const CTX_HLEN: usize = 0;         // IPv4 header length (ipv4Check)
export const CTX_TOTAL: usize = 4;        // IPv4 total length
export const CTX_PROTO: usize = 8;        // IP protocol
export const CTX_FRAG_OFFSET: usize = 12; // byte offset of this fragment in its datagram
export const CTX_MORE_FRAGS: usize = 16;  // 1 when MF is set
export const CTX_EMB_IP: usize = 20;      // ICMP error: the quoted IP header (icmp.ts embeddedCheck)
export const CTX_EMB_L4: usize = 24;      //   its first L4 bytes
export const CTX_EMB_PROTO: usize = 28;   //   its protocol
export const CTX_EMB_AVAIL: usize = 32;   //   how many L4 bytes were quoted
export const CTX_SIZE: u32 = 36;

export const packetContext: usize = memory.data(CTX_SIZE);
