//! A minimal DNS client: one A query over UDP, as `dig` would send it.
//! Readiness checks ask CoreDNS (and the stack's DNS servers) real
//! questions with it. The message format is RFC 1035's.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RCODE: 0 NOERROR, 3 NXDOMAIN, ...
    pub rcode: u8,
    pub authoritative: bool,
    /// A records of the answer section, with their TTLs.
    pub a: Vec<(Ipv4Addr, u32)>,
}

/// The query for `name`'s A records, with this message id.
pub fn encode_query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(32 + name.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00]); // recursion desired
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        m.push(label.len().min(63) as u8);
        m.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]); // type A, class IN
    m
}

/// Skip a (possibly compressed) name at `pos`; returns the position after it.
fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            return Some(pos + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(pos + 2);
        }
        pos += 1 + len;
    }
}

/// Read an answer to the query with id `id`.
pub fn decode_answer(id: u16, msg: &[u8]) -> Result<Answer, String> {
    if msg.len() < 12 {
        return Err(format!("a {}-byte answer is too short", msg.len()));
    }
    if u16::from_be_bytes([msg[0], msg[1]]) != id {
        return Err("the answer is for another query".into());
    }
    if msg[2] & 0x80 == 0 {
        return Err("the message is not an answer".into());
    }
    let authoritative = msg[2] & 0x04 != 0;
    let rcode = msg[3] & 0x0f;
    let qd = u16::from_be_bytes([msg[4], msg[5]]) as usize;
    let an = u16::from_be_bytes([msg[6], msg[7]]) as usize;
    let mut pos = 12;
    let truncated = || "the answer is truncated".to_string();
    for _ in 0..qd {
        pos = skip_name(msg, pos).ok_or_else(truncated)? + 4;
    }
    let mut a = vec![];
    for _ in 0..an {
        pos = skip_name(msg, pos).ok_or_else(truncated)?;
        let rr = msg.get(pos..pos + 10).ok_or_else(truncated)?;
        let (rtype, ttl, len) = (
            u16::from_be_bytes([rr[0], rr[1]]),
            u32::from_be_bytes([rr[4], rr[5], rr[6], rr[7]]),
            u16::from_be_bytes([rr[8], rr[9]]) as usize,
        );
        let data = msg.get(pos + 10..pos + 10 + len).ok_or_else(truncated)?;
        if rtype == 1 && len == 4 {
            a.push((Ipv4Addr::new(data[0], data[1], data[2], data[3]), ttl));
        }
        pos += 10 + len;
    }
    Ok(Answer { rcode, authoritative, a })
}

/// Ask `server` for `name`'s A records, retrying once per second until
/// `timeout` (UDP may lose the first packet while a pod's route settles).
pub async fn query_a(server: SocketAddr, name: &str, timeout: Duration) -> Result<Answer, String> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await.map_err(|e| format!("binding a UDP socket: {e}"))?;
    socket.connect(server).await.map_err(|e| format!("DNS server {server}: {e}"))?;
    let id: u16 = rand::random();
    let query = encode_query(id, name);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 1500];
    loop {
        socket.send(&query).await.map_err(|e| format!("asking {server}: {e}"))?;
        let wait = Duration::from_secs(1).min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => return decode_answer(id, &buf[..n]),
            Ok(Err(e)) => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("asking {server} for {name}: {e}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("{server} did not answer for {name} within {:.0}s", timeout.as_secs_f64()))
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_one_question_for_type_a() {
        let q = encode_query(0x1234, "kubernetes.default.svc.cluster.local.");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(q[12], 10);
        assert_eq!(&q[13..23], b"kubernetes");
        assert_eq!(&q[q.len() - 4..], &[0, 1, 0, 1]);
    }

    #[test]
    fn reads_an_answer_with_a_compressed_name() {
        let mut m = encode_query(7, "a.b");
        m[2] = 0x85; // answer, authoritative, recursion desired
        m[3] = 0x80;
        m[7] = 1; // one answer
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 1, 5]);
        let a = decode_answer(7, &m).unwrap();
        assert_eq!(a, Answer { rcode: 0, authoritative: true, a: vec![(Ipv4Addr::new(10, 0, 1, 5), 60)] });
        assert!(decode_answer(8, &m).is_err());
        assert!(decode_answer(7, &m[..20]).is_err());
    }
}
