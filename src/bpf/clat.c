// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// autoclat's tc programs (built by build.rs with `clang -O2 -g -target bpf`).
//
// clat_ingress6 — tc ingress of the uplink U. Acts only on IPv6 packets whose destination is the
//   CLAT IPv6 address. clatd reads those through an ETH_P_ALL packet socket, which sees frames
//   before tc ingress, so the kernel's own copy must not reach the IPv6 stack (UDP would draw
//   ICMPv6 port unreachable). Neighbour discovery to the address is let through (the address is
//   joined as anycast so the kernel answers NUD probes). With the fast path on, eligible packets
//   are translated to IPv4 (RFC 7915 §5) and redirected into the tun `v4-U` as received traffic;
//   everything else to the CLAT address is dropped (clatd has its copy). Eligible: plain TCP or
//   UDP right after the IPv6 header, source inside the NAT64 prefix with an embedded IPv4 address
//   that is remote unicast (not 0/8, 127/8, 224/4, 240/4, 255.255.255.255 or ours), hop limit
//   not 0, lengths consistent, UDP checksum not zero.
//
// clat_egress4 — tc egress of the tun `v4-U` (fast path only). Plain TCP/UDP from the CLAT IPv4
//   address to a remote unicast address (no options, not a fragment, valid header checksum,
//   TTL not 0) becomes IPv6 (RFC 7915 §4) and leaves through U directly; everything else goes on
//   to the tun and so to clatd.
//
// Stateless mode (RFC 6877 §6.3, clat_prefix_len 64): a dedicated /64 routed to this host maps
//   every downstream IPv4 host (RFC 6052 /64 rule: IPv4 address in octets 9..12, u-octet and
//   suffix zero). clat_ingress6 treats a destination inside it like the CLAT address (guard;
//   with the fast path, translated to the embedded IPv4 address when that is in the RFC 6052
//   format and downstream unicast, not ours); clat_egress4 translates packets from any other
//   downstream unicast source, from its embedding under the CLAT prefix.
//
// The fast path takes only packets the userspace translator (src/xlat) translates, and
// translates them to the same bytes (but the IPv4 Identification of small packets): the
// differential test netns-tests/bpf_parity.rs runs both on one corpus. It leaves the rest (ICMP,
// fragments, options, extension headers, zero-checksum UDP, oversize packets, TTL or hop limit 0,
// addresses userspace refuses) to clatd, which translates it, answers it with an ICMP error or
// drops it. src/bpf/mod.rs (`fast_path_takes_ingress`) and the receive filter of clatd
// (src/translator/filter.rs) mirror the ingress decision: keep the three in step.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Shared with src/bpf/mod.rs (`ClatConfigRaw`): keep the layouts identical.
struct clat_config {
	__u8 v6[16];          // CLAT IPv6 address on U
	__u8 prefix[16];      // NAT64 prefix, host bits zero
	__u32 v4;             // CLAT IPv4 address, network byte order
	__u32 prefix_len;     // 32, 40, 48, 56, 64 or 96
	__u32 tun_ifindex;    // v4-U
	__u32 uplink_ifindex; // U
	__u32 fast_path;      // 0: guard only
	__u32 uplink_l2_len;  // 14 for Ethernet uplinks, 0 for raw-IP (ARPHRD_NONE) uplinks
	__u32 tun_l2_len;     // 0: packets on v4-U start with the IPv4 header (always, in service);
	                      // 14 under BPF_PROG_TEST_RUN, which frames every packet in Ethernet
	__u8 clat_prefix[16]; // stateless mode: the CLAT prefix, host bits zero
	__u32 clat_prefix_len; // 64 in stateless mode; 0: none
};

// Shared with src/bpf/mod.rs (`CountersRaw`).
struct clat_counters {
	__u64 v6_to_v4_packets;
	__u64 v6_to_v4_bytes;
	__u64 v4_to_v6_packets;
	__u64 v4_to_v6_bytes;
	__u64 guard_drops; // packets to the CLAT address kept from the host stack (not translated here)
	__u64 errors;      // helper failures after the packet was already changed (dropped)
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clat_config);
} clat_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct clat_counters);
} clat_counters SEC(".maps");

#define IPV6_MIN_MTU 1280
#define NEXTHDR_ICMPV6 58
#define ICMPV6_ND_FIRST 133 // router solicitation
#define ICMPV6_ND_LAST 137  // redirect
#define IP_DF_BIT 0x4000
#define IP_MF_OFFSET 0x3fff

static __always_inline struct clat_counters *counters(void)
{
	__u32 key = 0;
	return bpf_map_lookup_elem(&clat_counters, &key);
}

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// Segments carried by one skb: a GSO skb stands for several packets on the wire.
static __always_inline __u64 wire_packets(struct __sk_buff *skb)
{
	return skb->gso_segs > 1 ? skb->gso_segs : 1;
}

// RFC 6052 §2.2: the byte offsets of the four IPv4 octets for each prefix length.
static __always_inline int v4_positions(__u32 len, int pos[4])
{
	switch (len) {
	case 32: pos[0] = 4; pos[1] = 5; pos[2] = 6; pos[3] = 7; return 0;
	case 40: pos[0] = 5; pos[1] = 6; pos[2] = 7; pos[3] = 9; return 0;
	case 48: pos[0] = 6; pos[1] = 7; pos[2] = 9; pos[3] = 10; return 0;
	case 56: pos[0] = 7; pos[1] = 9; pos[2] = 10; pos[3] = 11; return 0;
	case 64: pos[0] = 9; pos[1] = 10; pos[2] = 11; pos[3] = 12; return 0;
	case 96: pos[0] = 12; pos[1] = 13; pos[2] = 14; pos[3] = 15; return 0;
	default: return -1;
	}
}

// Whether `a` lies inside the prefix (lengths are whole octets).
static __always_inline int in_prefix(const __u8 a[16], const struct clat_config *cfg)
{
	__u32 n = cfg->prefix_len / 8;
#pragma unroll
	for (int i = 0; i < 12; i++) {
		if (i < n && a[i] != cfg->prefix[i])
			return 0;
	}
	return 1;
}

// Whether `a` (network byte order) can be a far-side unicast IPv4 address: the userspace
// translator's `is_remote_unicast` (src/xlat/mod.rs). Not 0/8, 127/8, 224/4 (multicast), 240/4
// (class E and the limited broadcast) or the CLAT's own address.
static __always_inline int remote_unicast(__be32 a, const struct clat_config *cfg)
{
	__u32 first = bpf_ntohl(a) >> 24;
	return a != cfg->v4 && first != 0 && first != 127 && first < 224;
}

static __always_inline int ipv6_eq(const __u8 a[16], const __u8 b[16])
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)b;
	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2] && x[3] == y[3];
}

// Whether `a` (network byte order) can be a downstream host's address in stateless mode: the
// userspace translator's `is_downstream_unicast` (src/xlat/mod.rs). Not 0/8, 127/8, 224/4 or
// 240/4 (which holds the limited broadcast).
static __always_inline int downstream_unicast(__be32 a)
{
	__u32 first = bpf_ntohl(a) >> 24;
	return first != 0 && first != 127 && first < 224;
}

// Stateless mode: whether `a` lies inside the CLAT prefix (a /64: the first two words).
static __always_inline int in_clat_prefix(const __u8 a[16], const struct clat_config *cfg)
{
	const __u32 *x = (const __u32 *)a, *y = (const __u32 *)cfg->clat_prefix;
	return cfg->clat_prefix_len == 64 && x[0] == y[0] && x[1] == y[1];
}

// The guard's answer for a packet to the CLAT address that is not translated here.
static __always_inline int guard_drop(struct clat_counters *c)
{
	if (c)
		__sync_fetch_and_add(&c->guard_drops, 1);
	return TC_ACT_SHOT;
}

SEC("classifier")
int clat_ingress6(struct __sk_buff *skb)
{
	__u32 key = 0;
	const struct clat_config *cfg = bpf_map_lookup_elem(&clat_config, &key);
	if (!cfg || skb->protocol != bpf_htons(ETH_P_IPV6))
		return TC_ACT_OK;
	__u32 l2 = cfg->uplink_l2_len == ETH_HLEN ? ETH_HLEN : 0;

	struct ipv6hdr ip6;
	if (bpf_skb_load_bytes(skb, l2, &ip6, sizeof(ip6)) < 0)
		return TC_ACT_OK;
	if (ip6.version != 6)
		return TC_ACT_OK;
	const __u8 *d6 = ip6.daddr.in6_u.u6_addr8;
	int to_clat = ipv6_eq(d6, cfg->v6);
	if (!to_clat && !in_clat_prefix(d6, cfg))
		return TC_ACT_OK;

	// Neighbour discovery to the CLAT address (unicast NUD probes) is the kernel's business.
	if (ip6.nexthdr == NEXTHDR_ICMPV6) {
		__u8 type;
		if (bpf_skb_load_bytes(skb, l2 + sizeof(ip6), &type, 1) == 0 &&
		    type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST && ip6.hop_limit == 255)
			return TC_ACT_OK;
	}

	struct clat_counters *c = counters();
	if (!cfg->fast_path)
		return guard_drop(c);

	// Eligibility for the fast path.
	if (ip6.nexthdr != IPPROTO_TCP && ip6.nexthdr != IPPROTO_UDP)
		return guard_drop(c);
	if (!in_prefix(ip6.saddr.in6_u.u6_addr8, cfg))
		return guard_drop(c);
	// Hop limit 0: clatd answers with ICMPv6 Time Exceeded (RFC 7915 §5.1).
	if (ip6.hop_limit == 0)
		return guard_drop(c);
	__u32 payload = bpf_ntohs(ip6.payload_len);
	if (payload < sizeof(struct udphdr) || l2 + sizeof(ip6) + payload > skb->len)
		return guard_drop(c);
	// The IPv4 packet would exceed 65535 octets.
	if (payload + sizeof(struct iphdr) > 0xffff)
		return guard_drop(c);
	__u32 csum_off; // of the L4 checksum, from the L4 header
	if (ip6.nexthdr == IPPROTO_UDP) {
		__u16 check;
		csum_off = offsetof(struct udphdr, check);
		if (bpf_skb_load_bytes(skb, l2 + sizeof(ip6) + csum_off, &check, 2) < 0 || check == 0)
			return guard_drop(c);
	} else {
		if (payload < sizeof(struct tcphdr))
			return guard_drop(c);
		csum_off = offsetof(struct tcphdr, check);
	}
	int pos[4];
	if (v4_positions(cfg->prefix_len, pos) < 0)
		return guard_drop(c);
	// The source's IPv4 address (RFC 6052 §2.2) must be a remote unicast one: a packet "from"
	// 127.0.0.53, 0.0.0.0, a multicast or broadcast address or our own is not translated (with
	// route_localnet=1 the host would deliver it to a local socket as if from loopback).
	__be32 saddr4;
	__u8 *src = (__u8 *)&saddr4;
	const __u8 *s6 = ip6.saddr.in6_u.u6_addr8;
	src[0] = s6[pos[0] & 15];
	src[1] = s6[pos[1] & 15];
	src[2] = s6[pos[2] & 15];
	src[3] = s6[pos[3] & 15];
	if (!remote_unicast(saddr4, cfg))
		return guard_drop(c);
	// The destination: ours, or in stateless mode the downstream host's address embedded in
	// the CLAT prefix (RFC 6052 /64: octets 9..12; the u-octet and the suffix must be zero,
	// userspace drops others as malformed).
	__be32 daddr4 = cfg->v4;
	if (!to_clat) {
		if (d6[8] | d6[13] | d6[14] | d6[15])
			return guard_drop(c);
		__u8 *dst = (__u8 *)&daddr4;
		dst[0] = d6[9];
		dst[1] = d6[10];
		dst[2] = d6[11];
		dst[3] = d6[12];
		if (daddr4 == cfg->v4 || !downstream_unicast(daddr4))
			return guard_drop(c);
	}

	// RFC 7915 §5.1.
	struct iphdr ip4 = {};
	__u32 tot_len = payload + sizeof(ip4);
	ip4.version = 4;
	ip4.ihl = 5;
	ip4.tos = (ip6.priority << 4) | (ip6.flow_lbl[0] >> 4);
	ip4.tot_len = bpf_htons(tot_len);
	// DF is set only above 1260 octets; a smaller packet may need fragmenting further on.
	if (tot_len > IPV6_MIN_MTU - 20) {
		ip4.frag_off = bpf_htons(IP_DF_BIT);
	} else {
		ip4.id = (__u16)bpf_get_prandom_u32();
	}
	ip4.ttl = ip6.hop_limit;
	ip4.protocol = ip6.nexthdr;
	ip4.saddr = saddr4;
	ip4.daddr = daddr4;
	ip4.check = csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&ip4, sizeof(ip4), 0));

	// Pseudo-header change for the L4 checksum: the addresses only (length and protocol sum
	// to the same value in both pseudo-headers).
	__s64 diff = bpf_csum_diff((__be32 *)&ip6.saddr, 32, (__be32 *)&ip4.saddr, 8, 0);
	if (diff < 0)
		return guard_drop(c);

	// From here on the packet is changed: failures drop it (clatd has its copy).
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) < 0)
		return guard_drop(c);
	if (l2) {
		__be16 proto = bpf_htons(ETH_P_IP);
		if (bpf_skb_store_bytes(skb, offsetof(struct ethhdr, h_proto), &proto, 2, 0) < 0)
			goto error;
	}
	if (bpf_skb_store_bytes(skb, l2, &ip4, sizeof(ip4), BPF_F_RECOMPUTE_CSUM) < 0)
		goto error;
	__u64 flags = BPF_F_PSEUDO_HDR | (ip4.protocol == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	if (bpf_l4_csum_replace(skb, l2 + sizeof(ip4) + csum_off, 0, diff, flags) < 0)
		goto error;

	if (c) {
		__sync_fetch_and_add(&c->v6_to_v4_packets, wire_packets(skb));
		__sync_fetch_and_add(&c->v6_to_v4_bytes, tot_len);
	}
	// The tun is an L3 device: the redirect strips the link-layer header itself.
	return bpf_redirect(cfg->tun_ifindex, BPF_F_INGRESS);

error:
	if (c)
		__sync_fetch_and_add(&c->errors, 1);
	return TC_ACT_SHOT;
}

SEC("classifier")
int clat_egress4(struct __sk_buff *skb)
{
	__u32 key = 0;
	const struct clat_config *cfg = bpf_map_lookup_elem(&clat_config, &key);
	if (!cfg || !cfg->fast_path || skb->protocol != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;

	// The tun carries bare IPv4: the header starts at offset 0 (14 under BPF_PROG_TEST_RUN).
	__u32 l2 = cfg->tun_l2_len == ETH_HLEN ? ETH_HLEN : 0;
	struct iphdr ip4;
	if (bpf_skb_load_bytes(skb, l2, &ip4, sizeof(ip4)) < 0)
		return TC_ACT_OK;
	if (ip4.version != 4 || ip4.ihl != 5)
		return TC_ACT_OK;
	// From the CLAT's address, or in stateless mode from any downstream unicast address.
	int from_clat = ip4.saddr == cfg->v4;
	if (!from_clat && !(cfg->clat_prefix_len == 64 && downstream_unicast(ip4.saddr)))
		return TC_ACT_OK;
	// What userspace refuses or answers with an ICMP error goes to clatd: a destination that
	// is not remote unicast (broadcast, multicast, loopback, ours...), TTL 0 (clatd answers
	// Time Exceeded; TTL 1 is translated to hop limit 1, as clatd does), a bad header checksum.
	if (!remote_unicast(ip4.daddr, cfg) || ip4.ttl == 0)
		return TC_ACT_OK;
	if (csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&ip4, sizeof(ip4), 0)) != 0)
		return TC_ACT_OK;
	if (ip4.protocol != IPPROTO_TCP && ip4.protocol != IPPROTO_UDP)
		return TC_ACT_OK;
	if (ip4.frag_off & bpf_htons(IP_MF_OFFSET))
		return TC_ACT_OK;
	__u32 tot_len = bpf_ntohs(ip4.tot_len);
	if (tot_len < sizeof(ip4) + sizeof(struct udphdr) || l2 + tot_len > skb->len)
		return TC_ACT_OK;
	// RFC 7915 §4.1: without DF a packet over 1280 octets after translation needs a fragment
	// header; clatd does that.
	if (!(ip4.frag_off & bpf_htons(IP_DF_BIT)) && tot_len + 20 > IPV6_MIN_MTU)
		return TC_ACT_OK;
	__u32 csum_off;
	if (ip4.protocol == IPPROTO_UDP) {
		__u16 check;
		csum_off = offsetof(struct udphdr, check);
		if (bpf_skb_load_bytes(skb, l2 + sizeof(ip4) + csum_off, &check, 2) < 0 ||
		    check == 0)
			return TC_ACT_OK;
	} else {
		if (tot_len < sizeof(ip4) + sizeof(struct tcphdr))
			return TC_ACT_OK;
		csum_off = offsetof(struct tcphdr, check);
	}
	int pos[4];
	if (v4_positions(cfg->prefix_len, pos) < 0)
		return TC_ACT_OK;
	// The helpers below refuse to grow an skb past 64 KiB (a BIG TCP super-packet): leave it
	// to clatd rather than fail half-way.
	if (skb->len + 20 + ETH_HLEN > 0xffff)
		return TC_ACT_OK;
	// Too big for U: clatd answers with ICMP fragmentation needed. The helper passes any GSO
	// skb (its segments are checked below); on success it leaves U's MTU in mtu_len.
	__u32 mtu_len = tot_len;
	if (bpf_check_mtu(skb, cfg->uplink_ifindex, &mtu_len, 20, 0) != 0)
		return TC_ACT_OK;
	if (skb->gso_size) {
		// Each segment grows by 20 octets; the tun's MTU (U's − 28) normally leaves room.
		__u32 l4_hdr = sizeof(struct udphdr);
		if (ip4.protocol == IPPROTO_TCP) {
			__u8 doff;
			if (bpf_skb_load_bytes(skb, l2 + sizeof(ip4) + 12, &doff, 1) < 0)
				return TC_ACT_OK;
			l4_hdr = (doff >> 4) * 4;
		}
		if (sizeof(struct ipv6hdr) + l4_hdr + skb->gso_size > mtu_len)
			return TC_ACT_OK;
	}

	// RFC 7915 §4.1.
	struct ipv6hdr ip6 = {};
	ip6.version = 6;
	ip6.priority = ip4.tos >> 4;
	ip6.flow_lbl[0] = (ip4.tos & 0xf) << 4;
	ip6.payload_len = bpf_htons(tot_len - sizeof(ip4));
	ip6.nexthdr = ip4.protocol;
	ip6.hop_limit = ip4.ttl;
	if (from_clat) {
		__builtin_memcpy(&ip6.saddr, cfg->v6, 16);
	} else {
		// RFC 6052 with the /64 CLAT prefix: octets 9..12, u-octet and suffix zero.
		__u8 *s6 = ip6.saddr.in6_u.u6_addr8;
		const __u8 *src = (const __u8 *)&ip4.saddr;
		__builtin_memcpy(s6, cfg->clat_prefix, 8);
		s6[9] = src[0];
		s6[10] = src[1];
		s6[11] = src[2];
		s6[12] = src[3];
	}
	__u8 *d6 = ip6.daddr.in6_u.u6_addr8;
	__builtin_memcpy(d6, cfg->prefix, 16);
	const __u8 *dst = (const __u8 *)&ip4.daddr;
	d6[pos[0] & 15] = dst[0];
	d6[pos[1] & 15] = dst[1];
	d6[pos[2] & 15] = dst[2];
	d6[pos[3] & 15] = dst[3];

	__s64 diff = bpf_csum_diff((__be32 *)&ip4.saddr, 8, (__be32 *)&ip6.saddr, 32, 0);
	if (diff < 0)
		return TC_ACT_OK;

	// bpf_skb_change_proto refuses GSO types it cannot convert (only TCP GSO converts):
	// the packet is then untouched and goes to clatd.
	if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) < 0)
		return TC_ACT_OK;

	struct clat_counters *c = counters();
	if (bpf_skb_store_bytes(skb, l2, &ip6, sizeof(ip6), 0) < 0)
		goto error;
	// BPF_F_PSEUDO_HDR: on a CHECKSUM_PARTIAL skb (TCP, GSO) the field holds the pseudo-header
	// sum only, and the helper updates just that; on a complete checksum it updates the whole.
	__u64 flags = BPF_F_PSEUDO_HDR | (ip6.nexthdr == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0);
	if (bpf_l4_csum_replace(skb, l2 + sizeof(ip6) + csum_off, 0, diff, flags) < 0)
		goto error;

	if (c) {
		__sync_fetch_and_add(&c->v4_to_v6_packets, wire_packets(skb));
		__sync_fetch_and_add(&c->v4_to_v6_bytes, tot_len + 20);
	}
	if (cfg->uplink_l2_len != ETH_HLEN)
		return bpf_redirect(cfg->uplink_ifindex, 0);
	// (Counted above: a failure below is also counted in `errors`.)
	// bpf_redirect_neigh wants an skb with an Ethernet header in front of the network header
	// (it drops one whose mac header is not before the network header, as on a tun): push a
	// placeholder, which it pulls off again before the route and neighbour lookup that fills in
	// the real one. The destination must not be multicast: zeros.
	if (bpf_skb_change_head(skb, ETH_HLEN, 0) < 0)
		goto error;
	struct ethhdr eth = {.h_proto = bpf_htons(ETH_P_IPV6)};
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) < 0)
		goto error;
	return bpf_redirect_neigh(cfg->uplink_ifindex, NULL, 0, 0);

error:
	if (c)
		__sync_fetch_and_add(&c->errors, 1);
	return TC_ACT_SHOT;
}

char _license[] SEC("license") = "GPL";
