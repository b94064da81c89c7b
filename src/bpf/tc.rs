//! The few tc netlink requests aya 0.14 does not offer: list the qdiscs and filters of a link,
//! create a clsact qdisc telling whether it was already there, and delete one. Synchronous (a
//! plain netlink socket), so the loader can be called from any thread, in or out of a runtime.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::tc::{
    TcAttribute, TcFilterBpfOption, TcHandle, TcHeader, TcMessage, TcOption,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Which clsact hook a filter sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    Ingress,
    Egress,
}

impl Hook {
    fn parent(self) -> TcHandle {
        TcHandle {
            major: 0xffff,
            minor: match self {
                Hook::Ingress => TcHandle::MIN_INGRESS,
                Hook::Egress => TcHandle::MIN_EGRESS,
            },
        }
    }
}

/// One tc filter on a clsact hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    /// The filter's `info` field: priority in the upper 16 bits, protocol in the lower.
    pub info: u32,
    pub handle: TcHandle,
    /// The BPF program name for a `bpf` filter.
    pub bpf_name: Option<String>,
}

fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    nl.finalize();
    let mut buf = vec![0u8; nl.buffer_len()];
    nl.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
    let mut replies = Vec::new();
    let mut rx = Vec::with_capacity(1 << 16);
    loop {
        rx.clear();
        let n = socket.recv(&mut rx, 0)?;
        for m in crate::nlmsg::messages(&rx[..n.min(rx.len())]) {
            let m = m.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(m.bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(replies),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        None => Ok(replies),
                    };
                }
                NetlinkPayload::InnerMessage(inner) => {
                    replies.push(inner);
                    if !dump {
                        return Ok(replies);
                    }
                }
                NetlinkPayload::Overrun(_) => {
                    return Err(io::Error::other("netlink overrun while dumping tc state"))
                }
                _ => {}
            }
        }
    }
}

fn tc_header(ifindex: u32) -> io::Result<TcHeader> {
    let index = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    let mut msg = TcMessage::with_index(index);
    msg.header.family = AddressFamily::Unspec;
    Ok(msg.header)
}

/// Whether `ifindex` has a clsact qdisc.
pub(crate) fn has_clsact(ifindex: u32) -> io::Result<bool> {
    let header = tc_header(ifindex)?;
    let replies = request(
        RouteNetlinkMessage::GetQueueDiscipline(TcMessage::from_parts(header.clone(), vec![])),
        NLM_F_DUMP,
    )?;
    Ok(replies.iter().any(|m| match m {
        RouteNetlinkMessage::NewQueueDiscipline(q) => {
            q.header.index == header.index
                && q.attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(k) if k == "clsact"))
        }
        _ => false,
    }))
}

fn clsact_message(ifindex: u32) -> io::Result<TcMessage> {
    let mut header = tc_header(ifindex)?;
    header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    header.parent = TcHandle::CLSACT;
    Ok(TcMessage::from_parts(
        header,
        vec![TcAttribute::Kind("clsact".into())],
    ))
}

/// Adds a clsact qdisc; `Ok(true)` if this call created it, `Ok(false)` if it was there.
pub(crate) fn add_clsact(ifindex: u32) -> io::Result<bool> {
    match request(
        RouteNetlinkMessage::NewQueueDiscipline(clsact_message(ifindex)?),
        NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the clsact qdisc (and with it every filter on it).
pub(crate) fn del_clsact(ifindex: u32) -> io::Result<()> {
    request(
        RouteNetlinkMessage::DelQueueDiscipline(clsact_message(ifindex)?),
        NLM_F_ACK,
    )
    .map(|_| ())
}

/// The filters on one clsact hook of `ifindex` (empty if there is no clsact).
pub(crate) fn filters(ifindex: u32, hook: Hook) -> io::Result<Vec<Filter>> {
    let mut header = tc_header(ifindex)?;
    header.parent = hook.parent();
    let replies = match request(
        RouteNetlinkMessage::GetTrafficFilter(TcMessage::from_parts(header.clone(), vec![])),
        NLM_F_DUMP,
    ) {
        Ok(r) => r,
        // No clsact qdisc: nothing to list.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    Ok(replies
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewTrafficFilter(f) if f.header.index == header.index => {
                let bpf_name = f.attributes.iter().find_map(|a| match a {
                    TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
                        TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => Some(n.clone()),
                        _ => None,
                    }),
                    _ => None,
                });
                Some(Filter {
                    info: f.header.info,
                    handle: f.header.handle,
                    bpf_name,
                })
            }
            _ => None,
        })
        .collect())
}

/// Deletes one filter found by [`filters`].
pub(crate) fn del_filter(ifindex: u32, hook: Hook, filter: &Filter) -> io::Result<()> {
    let mut header = tc_header(ifindex)?;
    header.parent = hook.parent();
    header.handle = filter.handle;
    header.info = filter.info;
    request(
        RouteNetlinkMessage::DelTrafficFilter(TcMessage::from_parts(
            header,
            vec![TcAttribute::Kind("bpf".into())],
        )),
        NLM_F_ACK,
    )
    .map(|_| ())
}
