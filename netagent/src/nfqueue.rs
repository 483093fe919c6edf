//! The kernel's nfnetlink_queue protocol, as much of it as delaying needs:
//! bind a queue, take packet ids in, send verdicts out. Metadata only: the
//! payload is never copied to userspace, so a held packet costs an id.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
/// When the queue is full, let packets through rather than drop them: a
/// delay agent that falls behind must not turn into a loss fault.
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
/// Hand over GSO packets whole instead of segmenting them first.
const NFQA_CFG_F_GSO: u32 = 4;
const NF_ACCEPT: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_NO_ENOBUFS: libc::c_int = 5;

pub struct Queue {
    fd: OwnedFd,
    num: u16,
    seq: u32,
}

impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Queue {
    /// Bind queue `num`. Fails with `EBUSY` when another process has it,
    /// which is how callers find a free number.
    pub fn bind(num: u16, max_len: u32) -> io::Result<Queue> {
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(raw, &addr as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_nl>() as u32)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // A burst of packets must not overflow the socket while we sleep.
        let size: libc::c_int = 8 << 20;
        let one: libc::c_int = 1;
        // SAFETY: options of the right size on our own socket; failures only
        // mean a smaller buffer or ENOBUFS reports, both survivable.
        unsafe {
            libc::setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &size as *const _ as *const _, 4);
            libc::setsockopt(raw, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one as *const _ as *const _, 4);
        }
        let mut q = Queue { fd, num, seq: 0 };
        let mut cmd = [0u8; 4];
        cmd[0] = NFQNL_CFG_CMD_BIND;
        cmd[2..4].copy_from_slice(&(libc::AF_INET as u16).to_be_bytes());
        q.request(NFQNL_MSG_CONFIG, &[(NFQA_CFG_CMD, &cmd)])?;
        let mut params = [0u8; 5];
        params[4] = NFQNL_COPY_META;
        q.request(NFQNL_MSG_CONFIG, &[(NFQA_CFG_PARAMS, &params)])?;
        q.request(NFQNL_MSG_CONFIG, &[(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())])?;
        let flags = (NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO).to_be_bytes();
        q.request(NFQNL_MSG_CONFIG, &[(NFQA_CFG_MASK, &flags), (NFQA_CFG_FLAGS, &flags)])?;
        Ok(q)
    }

    pub fn num(&self) -> u16 {
        self.num
    }

    /// Send one message and wait for the kernel's acknowledgement.
    fn request(&mut self, msg: u16, attrs: &[(u16, &[u8])]) -> io::Result<()> {
        self.seq += 1;
        let mut buf = vec![];
        message(&mut buf, msg, NLM_F_REQUEST | NLM_F_ACK, self.seq, self.num, attrs);
        self.send(&buf)?;
        let mut rx = vec![0u8; 8192];
        loop {
            let n = recv(self.as_raw_fd(), &mut rx, 0)?;
            for (kind, seq, body) in messages(&rx[..n]) {
                if kind == NLMSG_ERROR && seq == self.seq && body.len() >= 4 {
                    let errno = i32::from_ne_bytes(body[..4].try_into().expect("4 bytes"));
                    return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) };
                }
            }
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<()> {
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: buf and addr are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                self.as_raw_fd(),
                buf.as_ptr() as *const _,
                buf.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Read whatever is waiting, without blocking, and push the id of each
    /// queued packet. Returns how many arrived.
    pub fn drain(&self, buf: &mut [u8], ids: &mut Vec<u32>) -> io::Result<usize> {
        let before = ids.len();
        loop {
            let n = match recv(self.as_raw_fd(), buf, libc::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The kernel dropped messages for a full socket; what is
                // still queued in the kernel comes next.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(e),
            };
            for (kind, _, body) in messages(&buf[..n]) {
                if kind != (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) || body.len() < 4 {
                    continue;
                }
                for (attr, value) in attributes(&body[4..]) {
                    if attr == NFQA_PACKET_HDR && value.len() >= 4 {
                        ids.push(u32::from_be_bytes(value[..4].try_into().expect("4 bytes")));
                    }
                }
            }
        }
        Ok(ids.len() - before)
    }

    /// Let these packets go on their way, in one write.
    pub fn accept(&self, ids: &[u32]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(ids.len() * 32);
        for id in ids {
            let mut v = [0u8; 8];
            v[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
            v[4..].copy_from_slice(&id.to_be_bytes());
            message(&mut buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, self.num, &[(NFQA_VERDICT_HDR, &v)]);
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.send(&buf)
    }
}

fn recv(fd: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut _, buf.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// Append one netlink message (header, nfgenmsg, attributes) to `buf`.
fn message(buf: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 16]);
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
    buf.extend_from_slice(&queue.to_be_bytes());
    for (kind, value) in attrs {
        let len = 4 + value.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(value);
        buf.resize(start + align(buf.len() - start), 0);
    }
    let total = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&total.to_ne_bytes());
    buf[start + 4..start + 6].copy_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | msg).to_ne_bytes());
    buf[start + 6..start + 8].copy_from_slice(&flags.to_ne_bytes());
    buf[start + 8..start + 12].copy_from_slice(&seq.to_ne_bytes());
}

/// The messages in a datagram, as (type, sequence, body after the header).
fn messages(mut data: &[u8]) -> Vec<(u16, u32, &[u8])> {
    let mut out = vec![];
    while data.len() >= 16 {
        let len = u32::from_ne_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        if len < 16 || len > data.len() {
            break;
        }
        let kind = u16::from_ne_bytes(data[4..6].try_into().expect("2 bytes"));
        let seq = u32::from_ne_bytes(data[8..12].try_into().expect("4 bytes"));
        out.push((kind, seq, &data[16..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

/// Attributes as (type without the nested/byte-order flags, value).
fn attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = vec![];
    while data.len() >= 4 {
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((kind, &data[4..len]));
        data = &data[align(len).min(data.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_message_is_laid_out_as_the_kernel_reads_it() {
        let mut buf = vec![];
        let v = [0, 0, 0, 1, 0, 0, 0, 42];
        message(&mut buf, NFQNL_MSG_VERDICT, NLM_F_REQUEST, 0, 7, &[(NFQA_VERDICT_HDR, &v)]);
        assert_eq!(buf.len(), 16 + 4 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(buf[..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(buf[4..6].try_into().unwrap()), 0x0301);
        assert_eq!(&buf[18..20], &[0, 7], "queue number in network order");
        let parsed = messages(&buf);
        assert_eq!(parsed.len(), 1);
        let attrs = attributes(&parsed[0].2[4..]);
        assert_eq!(attrs, vec![(NFQA_VERDICT_HDR, &v[..])]);
    }

    #[test]
    fn odd_sized_attributes_are_padded_so_the_next_one_is_found() {
        let mut buf = vec![];
        message(&mut buf, NFQNL_MSG_CONFIG, 0, 1, 0, &[(NFQA_CFG_PARAMS, &[1, 2, 3, 4, 5]), (NFQA_CFG_MASK, &[9; 4])]);
        let parsed = messages(&buf);
        let attrs = attributes(&parsed[0].2[4..]);
        assert_eq!(attrs, vec![(NFQA_CFG_PARAMS, &[1u8, 2, 3, 4, 5][..]), (NFQA_CFG_MASK, &[9u8; 4][..])]);
    }

    #[test]
    fn truncated_input_yields_what_is_whole() {
        let mut buf = vec![];
        message(&mut buf, NFQNL_MSG_PACKET, 0, 1, 0, &[(NFQA_PACKET_HDR, &[0, 0, 0, 5, 8, 0, 1])]);
        let whole = buf.len();
        buf.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        assert_eq!(messages(&buf).len(), 1);
        assert_eq!(messages(&buf[..whole - 1]).len(), 0);
    }
}
