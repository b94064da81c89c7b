//! Completing transport checksums the kernel left unfinished (`CHECKSUM_PARTIAL`).
//!
//! A packet socket shows a received packet as the kernel holds it. When the checksum was never
//! computed — packets from a veth peer or a virtio host, and every GRO-merged TCP packet — the
//! packet socket flags it `TP_STATUS_CSUMNOTREADY` and the TCP/UDP checksum field holds only
//! the folded pseudo-header sum, not complemented. A translator that adjusts checksums
//! incrementally would carry that wrong value into the IPv4 packet, which the host then drops.
//! The fix is what the hardware would have done: sum the whole transport segment (field
//! included) and store the complement.
//!
//! Pure: works on a byte slice.

const NH_HOP_BY_HOP: u8 = 0;
const NH_TCP: u8 = 6;
const NH_UDP: u8 = 17;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_DEST_OPTS: u8 = 60;

/// Finish the TCP or UDP checksum of an IPv6 packet whose checksum field holds the partial
/// (pseudo-header) sum. Returns false, leaving the packet alone, when no TCP/UDP header is
/// found (truncated packet, fragment, other protocol).
pub fn complete_ipv6_checksum(pkt: &mut [u8]) -> bool {
    if pkt.len() < 40 || pkt[0] >> 4 != 6 {
        return false;
    }
    let mut nh = pkt[6];
    let mut off = 40usize;
    loop {
        match nh {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                let Some(hdr) = pkt.get(off..off + 2) else {
                    return false;
                };
                nh = hdr[0];
                off += (usize::from(hdr[1]) + 1) * 8;
            }
            // A fragment never carries a partial checksum.
            NH_FRAGMENT => return false,
            _ => break,
        }
    }
    let field = match nh {
        NH_TCP => 16,
        NH_UDP => 6,
        _ => return false,
    };
    // The segment ends where the payload length says (the frame may carry padding).
    let end = 40 + usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
    if off + field + 2 > end || end > pkt.len() {
        return false;
    }
    let mut sum = ones_complement_sum(&pkt[off..end]);
    sum = !sum;
    if nh == NH_UDP && sum == 0 {
        sum = 0xffff;
    }
    pkt[off + field..off + field + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// The folded 16-bit one's complement sum of `data` (odd length padded with zero): the one
/// checksum arithmetic of the project, [`crate::xlat::checksum`].
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    crate::xlat::checksum::fold(crate::xlat::checksum::add(0, data))
}
