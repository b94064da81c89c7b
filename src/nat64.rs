//! RFC 6052 IPv4-embedded IPv6 addresses: the NAT64 prefix and the embedding at each of the
//! six permitted lengths (32, 40, 48, 56, 64, 96), with bits 64..72 (the "u" octet) kept zero.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a string or address is not a usable NAT64 prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The text is not `ADDR/LEN` or a bare IPv6 address.
    #[error("`{0}` is not an IPv6 prefix (expected e.g. `64:ff9b::/96` or `2001:db8:100::/40`)")]
    Syntax(String),
    /// RFC 6052 permits only these lengths.
    #[error("prefix length /{0} is not one of the RFC 6052 lengths 32, 40, 48, 56, 64, 96")]
    Length(u8),
    /// Bits beyond the prefix length are set.
    #[error("`{0}` has bits set beyond its prefix length")]
    HostBits(String),
    /// For lengths below 96 the prefix would overlap the u-octet (bits 64..72) — only /96 may.
    #[error("`{0}` sets bits 64..72 (the RFC 6052 u-octet), which must be zero")]
    UOctet(String),
    /// A prefix no NAT64 can have: the addresses it makes are not unicast addresses of a
    /// translator somewhere on the network.
    #[error("`{0}` is {1}, not a NAT64 prefix")]
    Reserved(String, &'static str),
    /// The prefix lies inside one of the uplink's own prefixes: translated traffic would go to
    /// the local link, not to a NAT64.
    #[error("`{0}` is inside the uplink's own prefix {1}")]
    OwnPrefix(String, String),
}

/// A NAT64 prefix (RFC 6052 §2.2): an IPv6 prefix of length 32, 40, 48, 56, 64 or 96.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nat64Prefix {
    addr: Ipv6Addr,
    len: u8,
}

/// The well-known prefix of RFC 6052 §2.1.
pub const WELL_KNOWN: Nat64Prefix = Nat64Prefix {
    addr: Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
    len: 96,
};

/// The RFC 6052 lengths, in the order the bytes of the IPv4 address are placed.
pub const LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];

impl Nat64Prefix {
    /// A prefix from its address and length, checked against RFC 6052.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if !LENGTHS.contains(&len) {
            return Err(PrefixError::Length(len));
        }
        let bits = u128::from(addr);
        let host_mask = if len == 128 { 0 } else { u128::MAX >> len };
        if bits & host_mask != 0 {
            return Err(PrefixError::HostBits(format!("{addr}/{len}")));
        }
        // Bits 64..72 are octet 8. A /96 prefix may not set them either (RFC 6052 §2.2: "bits 64
        // to 71 ... MUST be set to zero" applies to the address format for every length).
        if addr.octets()[8] != 0 {
            return Err(PrefixError::UOctet(format!("{addr}/{len}")));
        }
        Ok(Self { addr, len })
    }

    /// Refuses prefixes that cannot belong to a NAT64 (README "Where the NAT64 prefix comes
    /// from"): multicast `ff00::/8`, link-local `fe80::/10`, the loopback and unspecified
    /// addresses' `::/N`, IPv4-mapped `::ffff:0:0/96`. A router advertising one, a DNS64 answer
    /// or a configuration naming one is ignored with this reason.
    pub fn check_usable(&self) -> Result<(), PrefixError> {
        let seg = self.addr.segments();
        let what = if seg[0] & 0xff00 == 0xff00 {
            Some("a multicast prefix (ff00::/8)")
        } else if seg[0] & 0xffc0 == 0xfe80 {
            Some("a link-local prefix (fe80::/10)")
        } else if u128::from(self.addr) == 0 {
            Some("inside ::/96 (unspecified, loopback and IPv4-compatible addresses)")
        } else if seg[..6] == [0, 0, 0, 0, 0, 0xffff] {
            Some("the IPv4-mapped prefix (::ffff:0:0/96)")
        } else {
            None
        };
        match what {
            Some(w) => Err(PrefixError::Reserved(self.to_string(), w)),
            None => Ok(()),
        }
    }

    /// [`Self::check_usable`], and not inside any of `own` (the uplink's prefixes as
    /// `(network, length)`; lengths above 64 are taken as their /64).
    pub fn check_for_uplink(
        &self,
        own: impl IntoIterator<Item = (Ipv6Addr, u8)>,
    ) -> Result<(), PrefixError> {
        self.check_usable()?;
        let bits = u128::from(self.addr);
        for (net, len) in own {
            let len = len.min(64);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            if self.len >= len && bits & mask == u128::from(net) & mask {
                let own = Ipv6Addr::from(u128::from(net) & mask);
                return Err(PrefixError::OwnPrefix(
                    self.to_string(),
                    format!("{own}/{len}"),
                ));
            }
        }
        Ok(())
    }

    /// The prefix bits as an address (host bits zero).
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length: one of [`LENGTHS`].
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Always false: a NAT64 prefix has at least 32 bits. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether this is the well-known prefix `64:ff9b::/96`.
    pub fn is_well_known(&self) -> bool {
        *self == WELL_KNOWN
    }

    /// The byte positions (into the 16 address octets) that carry the four IPv4 octets.
    fn positions(len: u8) -> [usize; 4] {
        match len {
            32 => [4, 5, 6, 7],
            40 => [5, 6, 7, 9],
            48 => [6, 7, 9, 10],
            56 => [7, 9, 10, 11],
            64 => [9, 10, 11, 12],
            _ => [12, 13, 14, 15],
        }
    }

    /// The byte positions (into the 16 address octets) that carry the four IPv4 octets of an
    /// address under this prefix (RFC 6052 §2.2: the u-octet, byte 8, is skipped).
    pub fn v4_octet_positions(&self) -> [usize; 4] {
        Self::positions(self.len)
    }

    /// RFC 6052 §2.2: the IPv4-embedded IPv6 address of `v4` under this prefix (suffix zero).
    pub fn embed(&self, v4: Ipv4Addr) -> Ipv6Addr {
        let mut o = self.addr.octets();
        for (pos, b) in Self::positions(self.len).iter().zip(v4.octets()) {
            o[*pos] = b;
        }
        Ipv6Addr::from(o)
    }

    /// The IPv4 address embedded in `v6`, if `v6` lies inside this prefix. The suffix and the
    /// u-octet are not checked (RFC 6052 §2.2 says they are ignored on input).
    pub fn extract(&self, v6: Ipv6Addr) -> Option<Ipv4Addr> {
        if !self.contains(v6) {
            return None;
        }
        Some(Self::extract_at(v6, self.len))
    }

    /// The four octets at the positions of length `len`, whatever the address's prefix.
    pub fn extract_at(v6: Ipv6Addr, len: u8) -> Ipv4Addr {
        let o = v6.octets();
        let p = Self::positions(len);
        Ipv4Addr::new(o[p[0]], o[p[1]], o[p[2]], o[p[3]])
    }

    /// Whether `v6` lies inside this prefix.
    pub fn contains(&self, v6: Ipv6Addr) -> bool {
        let mask = u128::MAX << (128 - u32::from(self.len));
        u128::from(v6) & mask == u128::from(self.addr)
    }

    /// The prefix formed by the first `len` bits of `v6` (host bits cleared, u-octet cleared).
    pub fn from_address(v6: Ipv6Addr, len: u8) -> Result<Self, PrefixError> {
        if !LENGTHS.contains(&len) {
            return Err(PrefixError::Length(len));
        }
        let mask = u128::MAX << (128 - u32::from(len));
        Self::new(Ipv6Addr::from(u128::from(v6) & mask), len)
    }
}

impl fmt::Display for Nat64Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Nat64Prefix {
    type Err = PrefixError;

    /// `ADDR/LEN`, or a bare address meaning `/96` (as Android's clatd `-p` does).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (
                a,
                l.parse::<u8>().map_err(|_| PrefixError::Syntax(s.into()))?,
            ),
            None => (s, 96),
        };
        let addr: Ipv6Addr = addr.parse().map_err(|_| PrefixError::Syntax(s.into()))?;
        Self::new(addr, len)
    }
}

impl serde::Serialize for Nat64Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Nat64Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let p: Nat64Prefix = s.parse().map_err(serde::de::Error::custom)?;
        p.check_usable().map_err(serde::de::Error::custom)?;
        Ok(p)
    }
}

/// Where a NAT64 prefix came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixSource {
    /// `nat64_prefix` in the configuration.
    Static,
    /// RFC 8781 PREF64 option in a router advertisement.
    Pref64,
    /// RFC 7050 discovery through DNS64 (`ipv4only.arpa`).
    Dns64,
}

impl std::fmt::Display for PrefixSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PrefixSource::Static => "static",
            PrefixSource::Pref64 => "pref64",
            PrefixSource::Dns64 => "dns64",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_no_nat64_can_have_are_refused() {
        for bad in [
            "ff02::/96",
            "fe80::/96",
            "::ffff:0:0/96",
            "::/96",
            "ff0e::/32",
        ] {
            let p: Nat64Prefix = bad.parse().unwrap();
            assert!(
                matches!(p.check_usable(), Err(PrefixError::Reserved(..))),
                "{bad}"
            );
        }
        for good in [
            "64:ff9b::/96",
            "2001:db8:64::/96",
            "2001:db8::/32",
            "fd00:64::/96",
        ] {
            let p: Nat64Prefix = good.parse().unwrap();
            assert_eq!(p.check_usable(), Ok(()), "{good}");
        }
    }

    #[test]
    fn a_prefix_inside_the_uplinks_own_is_refused() {
        let own = [
            ("2001:db8:1::".parse().unwrap(), 64),
            ("2001:db8:2::100".parse().unwrap(), 128),
        ];
        let inside: Nat64Prefix = "2001:db8:1::/96".parse().unwrap();
        let err = inside.check_for_uplink(own).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`2001:db8:1::/96` is inside the uplink's own prefix 2001:db8:1::/64"
        );
        // A /128 (DHCPv6) address stands for its /64.
        let dhcp: Nat64Prefix = "2001:db8:2:0:64::/96".parse().unwrap();
        assert!(dhcp.check_for_uplink(own).is_err());
        let elsewhere: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
        assert_eq!(elsewhere.check_for_uplink(own), Ok(()));
        // A shorter NAT64 prefix covering the uplink's /64 is not inside it.
        let wide: Nat64Prefix = "2001:db8::/32".parse().unwrap();
        assert_eq!(wide.check_for_uplink(own), Ok(()));
    }

    fn p(s: &str) -> Nat64Prefix {
        s.parse().expect("valid prefix in test")
    }

    /// RFC 6052 §2.4, Table 1: 192.0.2.33 under 2001:db8::/32 … 2001:db8:122:344::/96,
    /// and the well-known prefix.
    #[test]
    fn rfc6052_examples_table() {
        let v4 = Ipv4Addr::new(192, 0, 2, 33);
        let table = [
            ("2001:db8::/32", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "2001:db8:1c0:2:21::"),
            ("2001:db8:122::/48", "2001:db8:122:c000:2:2100::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"),
            ("64:ff9b::/96", "64:ff9b::192.0.2.33"),
        ];
        for (prefix, expected) in table {
            let prefix = p(prefix);
            let expected: Ipv6Addr = expected.parse().expect("table address");
            assert_eq!(prefix.embed(v4), expected, "embed under {prefix}");
            assert_eq!(prefix.extract(expected), Some(v4), "extract under {prefix}");
        }
    }

    #[test]
    fn parse_forms() {
        assert_eq!(p("64:ff9b::"), WELL_KNOWN);
        assert!(p("64:ff9b::/96").is_well_known());
        assert_eq!(p("2001:db8:100::/40").len(), 40);
        assert_eq!(
            "2001:db8::/33".parse::<Nat64Prefix>(),
            Err(PrefixError::Length(33))
        );
        assert!(matches!(
            "2001:db8::1/32".parse::<Nat64Prefix>(),
            Err(PrefixError::HostBits(_))
        ));
        assert!(matches!(
            "2001:db8:0:0:ff00::/96".parse::<Nat64Prefix>(),
            Err(PrefixError::UOctet(_))
        ));
        assert!(matches!(
            "nonsense".parse::<Nat64Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!(matches!(
            "2001:db8::/x".parse::<Nat64Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
    }

    #[test]
    fn outside_prefix_is_not_extracted() {
        assert_eq!(
            p("2001:db8:64::/96").extract("2001:db8:65::1".parse().expect("addr")),
            None
        );
    }

    #[test]
    fn display_roundtrip() {
        for s in ["2001:db8:64::/96", "2001:db8:100::/40", "2001:db8::/32"] {
            assert_eq!(p(s).to_string(), s);
        }
    }
}
