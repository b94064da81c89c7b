#!/usr/bin/env python3
"""Writes the seed corpus of the translation core (tests/corpus/xlat/*.hex).

Every packet is for one CLAT: IPv4 192.0.0.4, IPv6 2001:db8:1::a, NAT64 prefix
2001:db8:64::/96, uplink MTU 1500; the far-side host is 198.51.100.10. A file holds one packet
in hex (whitespace ignored) after comment lines:

  # dir: v4 | v6           IPv4 read from the tun, or IPv6 received on the uplink
  # expect: VERDICT        the userspace translator's verdict (Translated, Dropped(Reason))
  # fast: take|clatd|pass  what the eBPF fast path does: translate it; leave it to clatd
                           (egress TC_ACT_OK into the tun, ingress guard drop: clatd has its
                           copy); or let it through to the host (ingress only)

tests/xlat_props.rs replays and mutates the corpus; netns-tests/bpf_parity.rs runs it through
both the fast path and the userspace translator. Run this script from its directory to
rewrite the files.
"""
import ipaddress
import os
import struct


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def a4(s):
    return ipaddress.IPv4Address(s).packed


def a6(s):
    return ipaddress.IPv6Address(s).packed


CLAT4, REMOTE4 = "192.0.0.4", "198.51.100.10"
CLAT6 = "2001:db8:1::a"


def emb(v4):
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("2001:db8:64::")) | int(ipaddress.IPv4Address(v4))))


REMOTE6 = emb(REMOTE4)


def ip4(proto, l4, src=CLAT4, dst=REMOTE4, ttl=64, tos=0, ident=0x1234, df=True, mf=False,
        offset=0, options=b"", total=None, bad_csum=False):
    ihl = 5 + len(options) // 4
    tot = total if total is not None else ihl * 4 + len(l4)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (offset // 8)
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, tos, tot, ident, flags, ttl, proto, 0, a4(src), a4(dst)) + options
    c = csum(h) ^ (0x5555 if bad_csum else 0)
    return h[:10] + struct.pack("!H", c) + h[12:] + l4


def ip6(nh, payload, src=REMOTE6, dst=CLAT6, hop=64, tc=0, plen=None):
    p = plen if plen is not None else len(payload)
    first = (6 << 28) | (tc << 20)
    return struct.pack("!IHBB", first, p, nh, hop) + a6(src) + a6(dst) + payload


def pseudo4(src, dst, proto, n):
    return a4(src) + a4(dst) + struct.pack("!BBH", 0, proto, n)


def pseudo6(src, dst, nh, n):
    return a6(src) + a6(dst) + struct.pack("!IxxxB", n, nh)


def tcp(ps, data=b"", flags=0x18, opts=b"", bad=False):
    off = (20 + len(opts)) // 4
    h = struct.pack("!HHIIBBHHH", 40000, 443, 1000, 2000, off << 4, flags, 65535, 0, 0) + opts
    c = csum(ps(len(h) + len(data)) + h + data) ^ (0x00FF if bad else 0)
    return h[:16] + struct.pack("!H", c) + h[18:] + data


def udp(ps, data=b"", sport=40000, dport=53, zero=False):
    n = 8 + len(data)
    h = struct.pack("!HHHH", sport, dport, n, 0)
    c = 0 if zero else (csum(ps(n) + h + data) or 0xFFFF)
    return h[:6] + struct.pack("!H", c) + data


def icmp4(t, code, rest, body):
    h = struct.pack("!BBH", t, code, 0) + rest + body
    return h[:2] + struct.pack("!H", csum(h)) + h[4:]


def icmp6(src, dst, t, code, rest, body):
    m = struct.pack("!BBH", t, code, 0) + rest + body
    return m[:2] + struct.pack("!H", csum(pseudo6(src, dst, 58, len(m)) + m)) + m[4:]


def data(n, seed=1):
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


def ps4(dst=REMOTE4, src=CLAT4, proto=6):
    return lambda n: pseudo4(src, dst, proto, n)


def ps6(src=REMOTE6, dst=CLAT6, nh=6):
    return lambda n: pseudo6(src, dst, nh, n)


C = {}


def add(name, d, expect, fast, pkt):
    C[name] = (d, expect, fast, pkt)


T = "Translated"
U4 = lambda dst=REMOTE4, **k: ip4(17, udp(ps4(dst, proto=17), b"query", dport=k.pop("dport", 53)), dst=dst, **k)

# ---- IPv4 from the tun (egress) ----
add("v4-tcp-syn", "v4", T, "take", ip4(6, tcp(ps4(), flags=0x02, opts=b"\x02\x04\x05\xb4")))
add("v4-tcp-data-df", "v4", T, "take", ip4(6, tcp(ps4(), data(1000))))
add("v4-tcp-bad-l4-csum", "v4", T, "take", ip4(6, tcp(ps4(), data(100), bad=True)))
add("v4-udp-dns", "v4", T, "take", U4(df=False))
add("v4-udp-zero-csum", "v4", T, "clatd", ip4(17, udp(ps4(proto=17), b"abc", zero=True)))
add("v4-udp-1300-df-clear", "v4", T, "clatd", ip4(17, udp(ps4(proto=17), data(1300)), df=False))
add("v4-udp-1480-df", "v4", T, "take", ip4(17, udp(ps4(proto=17), data(1452))))
add("v4-udp-1481-df", "v4", "Dropped(TooBig)", "clatd", ip4(17, udp(ps4(proto=17), data(1453))))
add("v4-ttl0", "v4", "Dropped(TtlExceeded)", "clatd", U4(ttl=0))
add("v4-ttl1", "v4", T, "take", U4(ttl=1))
add("v4-ssdp", "v4", "Dropped(NotOurs)", "clatd", U4("239.255.255.250", dport=1900))
add("v4-mdns", "v4", "Dropped(NotOurs)", "clatd", U4("224.0.0.251", dport=5353))
add("v4-broadcast", "v4", "Dropped(NotOurs)", "clatd", U4("255.255.255.255", dport=67))
add("v4-loopback-dst", "v4", "Dropped(NotOurs)", "clatd", U4("127.0.0.1"))
add("v4-zero-dst", "v4", "Dropped(NotOurs)", "clatd", U4("0.0.0.0"))
add("v4-class-e-dst", "v4", "Dropped(NotOurs)", "clatd", U4("240.0.0.1"))
add("v4-own-dst", "v4", "Dropped(NotOurs)", "clatd", U4(CLAT4))
add("v4-other-src", "v4", "Dropped(NotOurs)", "clatd",
    ip4(17, udp(ps4(src="192.0.0.5", proto=17), b"x"), src="192.0.0.5"))
add("v4-options-nop", "v4", T, "clatd", ip4(17, udp(ps4(proto=17), b"opts"), options=b"\x01\x01\x01\x00"))
add("v4-source-route", "v4", "Dropped(SourceRoute)", "clatd",
    ip4(17, udp(ps4(proto=17), b"lsrr"), options=b"\x83\x07\x04" + a4("203.0.113.1") + b"\x00"))
whole = udp(ps4(proto=17), data(2000))
add("v4-frag-first", "v4", T, "clatd", ip4(17, whole[:1480], df=False, mf=True))
add("v4-frag-last", "v4", T, "clatd", ip4(17, whole[1480:], df=False, offset=1480))
add("v4-frag-64k-end", "v4", "Dropped(Malformed)", "clatd",
    bytes.fromhex("4500052812341ff840115957c0000004c633640a") + bytes(1300))
add("v4-icmp-echo", "v4", T, "clatd", ip4(1, icmp4(8, 0, b"\x12\x34\x00\x01", data(56))))
inbound = ip4(17, udp(lambda n: pseudo4(REMOTE4, CLAT4, 17, n), b"hello", sport=53, dport=40000),
              src=REMOTE4, dst=CLAT4, df=False)
add("v4-icmp-port-unreach", "v4", T, "clatd", ip4(1, icmp4(3, 3, b"\0\0\0\0", inbound)))
add("v4-bad-header-csum", "v4", "Dropped(Malformed)", "clatd", U4(bad_csum=True))
add("v4-truncated", "v4", "Dropped(Malformed)", "clatd",
    ip4(6, tcp(ps4(), data(40)), total=100))
add("v4-short-19", "v4", "Dropped(Malformed)", "clatd", U4()[:19])
add("v4-short-tcp", "v4", "Dropped(Malformed)", "clatd", ip4(6, tcp(ps4())[:10]))
add("v4-gre", "v4", T, "clatd", ip4(47, b"\x00\x00\x08\x00" + data(40)))
add("v4-tos-ecn", "v4", T, "take", ip4(6, tcp(ps4(), data(10)), tos=0xB9))
add("v4-trailing", "v4", T, "take", U4() + b"\xee" * 6)
add("v4-version6", "v4", "Dropped(Malformed)", "clatd", b"\x65" + U4()[1:])

# ---- IPv6 received on the uplink (ingress) ----
add("v6-tcp-syn", "v6", T, "take", ip6(6, tcp(ps6(), flags=0x12, opts=b"\x02\x04\x05\x8c")))
add("v6-tcp-data-1400", "v6", T, "take", ip6(6, tcp(ps6(), data(1400))))
add("v6-udp", "v6", T, "take", ip6(17, udp(ps6(nh=17), b"answer", sport=53, dport=40000)))
add("v6-udp-zero-csum", "v6", "Dropped(Malformed)", "clatd", ip6(17, udp(ps6(nh=17), b"z", zero=True)))
add("v6-hop0", "v6", "Dropped(TtlExceeded)", "clatd", ip6(17, udp(ps6(nh=17), b"h0"), hop=0))
add("v6-hop1", "v6", T, "take", ip6(17, udp(ps6(nh=17), b"h1"), hop=1))
for name, v4 in [("loopback", "127.0.0.53"), ("zero", "0.0.0.1"), ("mdns", "224.0.0.251"),
                 ("ssdp", "239.255.255.250"), ("broadcast", "255.255.255.255"),
                 ("class-e", "240.1.2.3"), ("own", CLAT4)]:
    s6 = emb(v4)
    add("v6-src-" + name, "v6", "Dropped(NotOurs)", "clatd",
        ip6(17, udp(ps6(src=s6, nh=17), b"spoof", sport=53), src=s6))
s6 = "2001:db8:65::1"
add("v6-src-outside-prefix", "v6", "Dropped(NotOurs)", "clatd", ip6(6, tcp(ps6(src=s6)), src=s6))
add("v6-dst-other", "v6", "Dropped(NotOurs)", "pass",
    ip6(6, tcp(ps6(dst="2001:db8:1::b")), dst="2001:db8:1::b"))
add("v6-icmp-echo-request", "v6", T, "clatd", ip6(58, icmp6(REMOTE6, CLAT6, 128, 0, b"\x00\x07\x00\x01", data(56))))
add("v6-icmp-echo-reply-zero", "v6", T, "clatd", ip6(58, icmp6(REMOTE6, CLAT6, 129, 0, b"\0\0\0\0", b"")))
ns = icmp6("fe80::1", CLAT6, 135, 0, b"\0\0\0\0", a6(CLAT6) + b"\x01\x01\x02\0\0\0\0\x01")
add("v6-nd-ns", "v6", "Dropped(NotOurs)", "pass", ip6(58, ns, src="fe80::1", hop=255))
w6 = udp(ps6(nh=17), data(1500), sport=53)
add("v6-frag-first", "v6", T, "clatd", ip6(44, struct.pack("!BBHI", 17, 0, 0 | 1, 0xABCD) + w6[:1232]))
add("v6-hbh-udp", "v6", T, "clatd", ip6(0, b"\x11\x00\x01\x04\0\0\0\0" + udp(ps6(nh=17), b"hbh")))
add("v6-routing-segments-left", "v6", "Dropped(RoutingHeader)", "clatd",
    ip6(43, b"\x11\x02\x00\x01\0\0\0\0" + a6("2001:db8:1::1") + udp(ps6(nh=17), b"rh")))
sent = ip6(6, tcp(lambda n: pseudo6(CLAT6, REMOTE6, 6, n), data(1400)), src=CLAT6, dst=REMOTE6)
add("v6-packet-too-big", "v6", T, "clatd",
    ip6(58, icmp6(REMOTE6, CLAT6, 2, 0, struct.pack("!I", 1400), sent[:1232])))
add("v6-truncated", "v6", "Dropped(Malformed)", "clatd", ip6(6, tcp(ps6(), data(20)), plen=100))
add("v6-short-tcp", "v6", "Dropped(Malformed)", "clatd", ip6(6, tcp(ps6())[:12]))
add("v6-padded", "v6", T, "take", ip6(17, udp(ps6(nh=17), b"pad")) + bytes(10))
add("v6-tclass", "v6", T, "take", ip6(6, tcp(ps6(), data(5)), tc=0xB9))
add("v6-bad-tcp-csum", "v6", T, "take", ip6(6, tcp(ps6(), data(33), bad=True)))
add("v6-jumbo-zero-length", "v6", "Dropped(Unsupported)", "clatd", ip6(6, tcp(ps6()), plen=0))
add("v6-frag-too-long", "v6", "Dropped(Malformed)", "clatd",
    ip6(44, struct.pack("!BBHI", 17, 0, 65512, 7) + data(40)))

here = os.path.dirname(os.path.abspath(__file__))
for f in os.listdir(here):
    if f.endswith(".hex"):
        os.remove(os.path.join(here, f))
for name, (d, expect, fast, pkt) in sorted(C.items()):
    with open(os.path.join(here, name + ".hex"), "w") as f:
        f.write(f"# dir: {d}\n# expect: {expect}\n# fast: {fast}\n")
        h = pkt.hex()
        for i in range(0, len(h), 64):
            f.write(h[i:i + 64] + "\n")
print(len(C), "packets")
