//! The one netlink wire helper (pure, no I/O): walking the messages of a datagram, walking the
//! attributes of a message, building a request, and reading an `NLMSG_ERROR`. The modules that
//! speak raw netlink — the ND user-option reader (`discovery::ndopt`, `watch`), the tc requests
//! of the eBPF loader (`bpf::tc`) and the translator's next-hop lookups (`translator::neigh`) —
//! all use it, so there is one place where lengths are checked.

/// `sizeof(struct nlmsghdr)`.
pub const NLMSG_HDRLEN: usize = 16;
/// `NLMSG_ERROR`: the payload is an error code (0 = ACK) and the request's header.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 1;
/// `NLA_F_NESTED`: the attribute's data is itself a list of attributes.
pub const NLA_F_NESTED: u16 = 0x8000;

/// Why a datagram or message is not well-formed netlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NlmsgError {
    /// A message's length is shorter than its header or runs past the datagram.
    #[error("netlink message length {len} at offset {offset} overruns the datagram")]
    BadLength { offset: usize, len: usize },
    /// An attribute's length is shorter than its header or runs past the message.
    #[error("netlink attribute {kind} at offset {offset} has a bad length {len}")]
    BadAttribute {
        kind: u16,
        offset: usize,
        len: usize,
    },
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the netlink header, up to the message's length.
    pub payload: &'a [u8],
    /// The whole message, header included.
    pub bytes: &'a [u8],
}

impl Msg<'_> {
    /// For an `NLMSG_ERROR`: the errno (positive; 0 is an ACK). `None` for other types.
    pub fn error(&self) -> Option<i32> {
        if self.ty != NLMSG_ERROR {
            return None;
        }
        let code = self.payload.get(..4)?;
        Some(i32::from_ne_bytes([code[0], code[1], code[2], code[3]]).saturating_neg())
    }
}

/// The messages of one datagram, in order. A malformed header ends the walk with one error.
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<Msg<'_>, NlmsgError>> {
    let mut rest = datagram;
    let mut offset = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            failed = true;
            return Some(Err(NlmsgError::BadLength { offset, len }));
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[NLMSG_HDRLEN..len],
            bytes: &rest[..len],
        };
        let step = len.next_multiple_of(4).min(rest.len());
        rest = &rest[step..];
        offset += step;
        Some(Ok(msg))
    })
}

/// The attributes of a message payload after its fixed header of `fixed` bytes: `(type,
/// data)` with the `NLA_F_*` flag bits cleared. A malformed attribute ends the walk with one
/// error (its offset counted from the start of `payload`).
pub fn attrs(
    payload: &[u8],
    fixed: usize,
) -> impl Iterator<Item = Result<(u16, &[u8]), NlmsgError>> {
    let mut rest = payload.get(fixed..).unwrap_or(&[]);
    let mut offset = fixed;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            failed = true;
            return Some(Err(NlmsgError::BadAttribute { kind, offset, len }));
        }
        let data = &rest[4..len];
        let step = len.next_multiple_of(4).min(rest.len());
        rest = &rest[step..];
        offset += step;
        Some(Ok((kind, data)))
    })
}

/// A request being built: header, fixed part, attributes; [`Request::finish`] sets the length.
#[derive(Debug, Clone)]
pub struct Request(Vec<u8>);

impl Request {
    /// A message of type `ty` with `NLM_F_REQUEST | flags` and sequence number `seq`.
    pub fn new(ty: u16, flags: u16, seq: u32) -> Self {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        Self(m)
    }

    /// Appends raw bytes (the message type's fixed header).
    pub fn fixed(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }

    /// Appends one attribute, padded to 4 bytes.
    pub fn attr(mut self, ty: u16, data: &[u8]) -> Self {
        put_attr(&mut self.0, ty, data);
        self
    }

    /// The finished message.
    pub fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .to_ne_bytes();
        self.0[..4].copy_from_slice(&len);
        self.0
    }
}

/// Appends one attribute (header, `data`, padding to 4 bytes) to `buf`, which must end on a
/// 4-byte boundary: the building block of nested attributes (`NLA_F_NESTED | ty` with the
/// inner attributes as `data`).
pub fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_built_request_walks_back() {
        let a = Request::new(26, 0, 7)
            .fixed(&[10, 0, 0, 0])
            .attr(1, &[1, 2, 3])
            .attr(0x8000 | 5, &[9; 4])
            .finish();
        let b = Request::new(16, 0x300, 8).finish();
        let mut d = a.clone();
        d.extend_from_slice(&b);
        let msgs: Vec<Msg> = messages(&d).map(Result::unwrap).collect();
        assert_eq!(msgs.len(), 2);
        assert_eq!((msgs[0].ty, msgs[0].flags, msgs[0].seq), (26, 1, 7));
        assert_eq!((msgs[1].ty, msgs[1].flags, msgs[1].seq), (16, 0x301, 8));
        let at: Vec<(u16, &[u8])> = attrs(msgs[0].payload, 4).map(Result::unwrap).collect();
        assert_eq!(at, vec![(1, &[1u8, 2, 3][..]), (5, &[9u8; 4][..])]);
        assert_eq!(msgs[0].error(), None);
    }

    #[test]
    fn errors_acks_and_bad_lengths() {
        let mut e = Request::new(NLMSG_ERROR, 0, 1)
            .fixed(&(-19i32).to_ne_bytes())
            .finish();
        assert_eq!(messages(&e).next().unwrap().unwrap().error(), Some(19));
        e[16..20].copy_from_slice(&0i32.to_ne_bytes());
        assert_eq!(messages(&e).next().unwrap().unwrap().error(), Some(0));
        // A length past the datagram: one error, then nothing.
        let mut bad = Request::new(16, 0, 1).finish();
        bad[..4].copy_from_slice(&100u32.to_ne_bytes());
        let got: Vec<_> = messages(&bad).collect();
        assert_eq!(
            got,
            vec![Err(NlmsgError::BadLength {
                offset: 0,
                len: 100
            })]
        );
        // An attribute overrunning its message.
        let payload = [8u8, 0, 1, 0, 1, 2];
        let got: Vec<_> = attrs(&payload, 0).collect();
        assert_eq!(
            got,
            vec![Err(NlmsgError::BadAttribute {
                kind: 1,
                offset: 0,
                len: 8
            })]
        );
        // Truncated tails end quietly.
        assert_eq!(messages(&[0u8; 8]).count(), 0);
        assert_eq!(attrs(&[0u8; 3], 0).count(), 0);
    }
}
