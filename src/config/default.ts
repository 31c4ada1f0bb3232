// The default /etc/config/vpnmasq shipped in the image
// (firmware/files/etc/config/vpnmasq), as a string for the embedded lab demo.
// Keep the two identical: test/unit/config checks that they are.

export const DEFAULT_CONFIG = `# /etc/config/vpnmasq: vpnmasq, a NAT router with VPN passthrough.
#
# uci(1) syntax. Section and option names follow firewall4 (fw4) where fw4
# has the same concept: 'config redirect' is a port forward, 'config rule'
# a filter rule. An option left out takes the default shown here.

config vpnmasq 'main'
	option lan_device 'br-lan'	# LAN-side device
	option wan_device 'wan'	# WAN-side device; its IPv4 address is the masquerade address
	option enabled '0'	# '1' to run: until then the package leaves routing alone
	option tun_inside 'tin'	# TUN device on the LAN side
	option tun_outside 'tout'	# TUN device on the WAN side
	option offload '1'	# TUN offloads (GSO super-packets, partial checksums); '0': one packet per read
	option gro '1'	# with offloads and USO: same-flow UDP datagrams of a batch in one write; '0': one write each
	option flow_offload '1'	# a LAN host's established flows (TCP, UDP, ping, ESP by SPI, PPTP's GRE by Call ID) and a port forward's answered ones move through a kernel fast path (eBPF, Linux 6.6+; off with the reason in status where the kernel refuses); SYN, FIN and RST still through the engine; '0': every packet through the TUNs
	option host_queues 'auto'	# host queues of the LAN TUN (a bulk and a sparse-flow ring each), one per LAN host by address hash, and of the WAN TUN (one ring each) by internet host and protocol, read in turn: 1, 2, 4, 8, 16, or auto (8 with 384 MiB of RAM or more, else 1)
	option priority 'realtime'	# data path scheduling: realtime (SCHED_FIFO 10), high (nice -10) or normal
	option busy_poll '0'	# microseconds to keep polling the TUNs after the last packet before sleeping (0: sleep at once)
	# list lan_subnet '192.168.1.0/24'	# none: taken from lan_device at run time
	option max_flows '65536'	# size of the flow table (1024..4194304)
	option acct '0'	# '1': bytes per flow in conntrack -L (16 bytes more per flow; a restart applies it)
	option log_level 'info'	# fatal, error, warn, info, debug or trace
	option masq_ports '61000-65535'	# source ports for masquerading; redirects must stay outside
	# Idle timeouts, in seconds.
	option tcp_timeout '7440'	# established TCP (RFC 5382: at least 2 h 4 min)
	option tcp_transitory_timeout '240'	# TCP being opened or closed
	option udp_timeout '300'	# UDP (RFC 4787: at least 2 min, 5 min recommended)
	option icmp_timeout '60'	# ICMP queries (RFC 5508: at least 60 s)
	option frag_timeout '30'	# reassembly of a fragmented datagram (at most 255)
	# VPN passthrough: IPsec (ESP, IKE on udp 500, NAT-T on udp 4500) and GRE.
	option esp_timeout '1800'
	option esp_init_timeout '120'
	option esp_init_retries '5'
	option ike_timeout '3600'	# at least esp_timeout
	option natt_timeout '300'
	option gre_timeout '7440'
	option parallel_sessions '0'
	option esp_guess '0'
	# No table one source can fill: caps per LAN host, and a short life for
	# what WAN packets opened until the LAN side answers.
	option unreplied_timeout '30'
	option src_max_flows '0'	# 0: a quarter of max_flows, at least 1024
	option src_max_ike '256'
	option src_max_calls '256'
	option src_max_esp_pending '16'
	option src_max_frags '256'
	option control_socket '/var/run/vpnmasq.sock'	# Unix socket for control commands
	option wan_interface 'wan'	# netifd interface of the WAN (hotplug and procd triggers)
	# Observability (off unless set): Prometheus metrics, a read-only dashboard.
	# option metrics_listen '127.0.0.1:9753'	# HTTP GET /metrics; loopback or a LAN address, never the WAN
	# option metrics_file '/var/prometheus/vpnmasq.prom'	# for prometheus-node-exporter-lua's textfile collector
	# option web_listen '192.168.1.1:8080'	# dashboard; a LAN address of lan_device
	# The engine's tables, kept across a crash or restart (vpnmasq run --fresh discards them).
	option snapshot_dir '/run/vpnmasq'	# state kept across restarts (tmpfs); delete the file or run --fresh to discard
	option snapshot_interval '1'	# seconds between state snapshots; 0 = only at a clean stop

# Example port forward: tcp 8080 on the WAN address to 192.168.1.10:80.
# Delete the 'enabled' line to use it.
config redirect
	option name 'Example-Forward-HTTP'
	option enabled '0'
	option src 'wan'
	option proto 'tcp'
	option src_dport '8080'
	option dest 'lan'
	option dest_ip '192.168.1.10'
	option dest_port '80'

# Example rule: let IKE and NAT-T reach the router itself (no 'dest').
# Delete the 'enabled' line to use it.
config rule
	option name 'Example-Allow-IKE'
	option enabled '0'
	option src 'wan'
	option proto 'udp'
	option dest_port '500 4500'
	option target 'ACCEPT'
`;
