# Captures the real kernel messages in kernel_events.txt (label, nlmsg_type, nlmsg_flags, hex of
# the whole netlink message). Run as root inside a fresh namespace:
#   ip netns add w4cap; ip netns exec w4cap python3 capture.py > kernel_events.txt; ip netns del w4cap
import socket, subprocess, time, sys, struct
# groups: LINK=1, IPV4_IFADDR=5, IPV4_ROUTE=7, IPV6_IFADDR=9, IPV6_ROUTE=11
groups = (1<<0)|(1<<4)|(1<<6)|(1<<8)|(1<<10)
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.bind((0, groups))
s.setsockopt(270, 1, 20)  # NETLINK_ADD_MEMBERSHIP, ND_USEROPT
s.setblocking(False)
out = []
def drain(label):
    time.sleep(0.3)
    while True:
        try:
            d = s.recv(65536)
        except BlockingIOError:
            break
        off = 0
        while off + 16 <= len(d):
            ln, ty, fl = struct.unpack_from("=IHH", d, off)
            out.append((label, ty, fl, d[off:off+ln].hex()))
            off += (ln + 3) & ~3
def sh(label, cmd):
    subprocess.run(cmd, shell=True, check=True)
    drain(label)
sh("veth_add", "ip link add w4a type veth peer name w4b")
sh("alias", "ip link set w4a alias 'autoclat:test'")
sh("up", "sysctl -qw net.ipv6.conf.w4a.accept_dad=0; ip link set w4a up; ip link set w4b up")
sh("v6addr", "ip -6 addr add 2001:db8:1::5/64 dev w4a nodad")
sh("v6route", "ip -6 route add default via 2001:db8:1::1 dev w4a metric 100")
sh("v4addr", "ip addr add 198.51.100.2/24 dev w4a")
sh("v4route", "ip route add default via 198.51.100.1 dev w4a")
sh("v4route_del", "ip route del default via 198.51.100.1 dev w4a")
sh("v4addr_del", "ip addr del 198.51.100.2/24 dev w4a")
sh("v6route_del", "ip -6 route del default via 2001:db8:1::1 dev w4a")
sh("v6addr_del", "ip -6 addr del 2001:db8:1::5/64 dev w4a")
sh("down", "ip link set w4a down")
sh("mp4", "ip link set w4a up; ip addr add 198.51.100.2/24 dev w4a; ip addr add 203.0.113.2/24 dev w4b; ip route add default nexthop via 198.51.100.1 dev w4a nexthop via 203.0.113.1 dev w4b")
sh("mp4_replace", "ip route replace default via 203.0.113.1 dev w4b")
sh("mp4_del", "ip route del default; ip addr del 203.0.113.2/24 dev w4b; ip addr del 198.51.100.2/24 dev w4a")
sh("v4_silent", "ip addr add 198.51.100.2/24 dev w4a; ip route add default via 198.51.100.1 dev w4a; ip addr del 198.51.100.2/24 dev w4a")
sh("ra_prep", "sysctl -qw net.ipv6.conf.w4b.accept_dad=0; ip link set w4a down; ip link set w4a up; sysctl -qw net.ipv6.conf.w4a.accept_ra=2")
import ipaddress
def ra(pref_life, rdnss_life):
    o = bytes([134,0,0,0,64,0,0,0]) + bytes(8)
    p = ipaddress.IPv6Address("2001:db8:64::").packed[:12]
    o += bytes([38,2]) + struct.pack("!H", (pref_life//8)<<3 | 0) + p
    o += bytes([25,3,0,0]) + struct.pack("!I", rdnss_life) + ipaddress.IPv6Address("2001:db8:1::53").packed
    r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    r.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"w4b")
    r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    idx = socket.if_nametoindex("w4b")
    r.sendto(o, ("ff02::1", 0, 0, idx))
    r.close()
time.sleep(0.5); drain("ra_wait")
ra(600, 300); drain("ra")
ra(0, 0); drain("ra_withdraw")
sh("veth_del", "ip link del w4a")
for l, t, f, h in out:
    print(l, t, f, h)
