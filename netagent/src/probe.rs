//! Round trips over UDP: an echo server and a pinger that prints each
//! round trip, so a link's real delay can be compared with what was asked.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

pub fn echo(listen: &str) -> Result<(), String> {
    let sock = UdpSocket::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    println!("echo listening on {}", sock.local_addr().map_err(|e| e.to_string())?);
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).map_err(|e| format!("receiving: {e}"))?;
        let _ = sock.send_to(&buf[..n], from);
    }
}

pub fn ping(target: &str, count: u64, interval: Duration, timeout: Duration) -> Result<(), String> {
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    sock.connect(target).map_err(|e| format!("connecting to {target}: {e}"))?;
    let mut received = 0;
    let mut buf = [0u8; 64];
    for seq in 0..count {
        let sent = Instant::now();
        sock.send(&seq.to_be_bytes()).map_err(|e| format!("sending to {target}: {e}"))?;
        // Late answers to earlier probes are skipped, not mistaken for this one.
        loop {
            let left = timeout.saturating_sub(sent.elapsed());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
            match sock.recv(&mut buf) {
                Ok(8) if buf[..8] == seq.to_be_bytes() => {
                    println!("rtt_us {}", sent.elapsed().as_micros());
                    received += 1;
                    break;
                }
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break,
                // An ICMP unreachable from an earlier probe: keep waiting.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(format!("receiving from {target}: {e}")),
            }
        }
        std::thread::sleep(interval.saturating_sub(sent.elapsed()));
    }
    println!("sent {count} received {received}");
    Ok(())
}

/// TCP sink: read each connection to its end, answer with the byte count.
pub fn sink(listen: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    println!("sink listening on {}", l.local_addr().map_err(|e| e.to_string())?);
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut total: u64 = 0;
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = c.write_all(&total.to_be_bytes());
        });
    }
    Ok(())
}

/// Send `bytes` to a sink and print the rate it took them at, counted until
/// the sink confirms it read them all.
pub fn send(target: &str, bytes: u64) -> Result<(), String> {
    use std::io::{Read, Write};
    let start = Instant::now();
    let mut c = std::net::TcpStream::connect(target).map_err(|e| format!("connecting to {target}: {e}"))?;
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        c.write_all(&chunk[..n]).map_err(|e| format!("sending to {target}: {e}"))?;
        left -= n as u64;
    }
    c.shutdown(std::net::Shutdown::Write).map_err(|e| e.to_string())?;
    let mut ack = [0u8; 8];
    c.read_exact(&mut ack).map_err(|e| format!("waiting for {target} to confirm: {e}"))?;
    let got = u64::from_be_bytes(ack);
    if got != bytes {
        return Err(format!("sent {bytes} bytes, the sink read {got}"));
    }
    let secs = start.elapsed().as_secs_f64();
    println!("throughput_kbit {:.0} elapsed_us {}", bytes as f64 * 8.0 / 1000.0 / secs, (secs * 1e6) as u64);
    Ok(())
}
