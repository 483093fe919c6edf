//! Hold each queued packet for its delay, then let it go. One thread: wait
//! for packets or the next release time, whichever is first.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::nfqueue::Queue;

pub struct Config {
    /// The first queue number to try; the agent takes the first free one at
    /// or above it, so agents of parallel stacks never share a queue.
    pub queue_from: u16,
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform draw from ±`jitter`
    /// (netem's default distribution), never below zero.
    pub jitter: Duration,
    pub seed: u64,
}

/// Queues tried before giving up: more than any host runs stacks.
const QUEUE_TRIES: u16 = 2048;
/// Packets the kernel may hold for us. Past this it lets them through
/// undelayed (fail-open), rather than dropping them.
const QUEUE_MAX_LEN: u32 = 65536;

pub fn run(cfg: Config) -> Result<(), String> {
    let queue = bind_free(cfg.queue_from)?;
    // Sleeping to the microsecond needs the default 50 µs timer slack gone.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    println!("bound queue {} delay_us {} jitter_us {}", queue.num(), cfg.delay.as_micros(), cfg.jitter.as_micros());
    let _ = std::io::stdout().flush();
    let mut schedule = Schedule::new(cfg.delay, cfg.jitter, cfg.seed);
    let mut held: BinaryHeap<Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut ids = Vec::with_capacity(1024);
    let mut due = Vec::with_capacity(1024);
    loop {
        let now = Instant::now();
        due.clear();
        while let Some(Reverse((t, id))) = held.peek().copied() {
            if t > now {
                break;
            }
            held.pop();
            due.push(id);
        }
        queue.accept(&due).map_err(|e| format!("sending verdicts on queue {}: {e}", queue.num()))?;
        let wait = held.peek().map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()));
        wait_readable(queue.as_raw_fd(), wait).map_err(|e| format!("waiting on queue {}: {e}", queue.num()))?;
        ids.clear();
        queue.drain(&mut buf, &mut ids).map_err(|e| format!("reading queue {}: {e}", queue.num()))?;
        let arrived = Instant::now();
        for id in &ids {
            held.push(Reverse((arrived + schedule.next(), *id)));
        }
    }
}

fn bind_free(from: u16) -> Result<Queue, String> {
    let mut last = None;
    for num in (from..=u16::MAX).take(QUEUE_TRIES as usize) {
        match Queue::bind(num, QUEUE_MAX_LEN) {
            Ok(q) => return Ok(q),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return Err(format!(
                    "binding NFQUEUE {num}: {e}; the agent needs CAP_NET_ADMIN in the host's network namespace"
                ))
            }
            Err(e) => return Err(format!("binding NFQUEUE {num}: {e}")),
        }
    }
    Err(format!("no free NFQUEUE among {QUEUE_TRIES} from {from}: {}", last.map(|e| e.to_string()).unwrap_or_default()))
}

/// Block until the socket is readable or `timeout` passes (`None`: no limit).
fn wait_readable(fd: i32, timeout: Option<Duration>) -> std::io::Result<()> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ts = timeout.map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as _ });
    let tsp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: one valid pollfd, a valid or null timespec, no signal mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, tsp, std::ptr::null()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Each packet's delay: fixed plus seeded uniform jitter.
pub struct Schedule {
    delay: Duration,
    jitter: Duration,
    state: u64,
}

impl Schedule {
    pub fn new(delay: Duration, jitter: Duration, seed: u64) -> Schedule {
        Schedule { delay, jitter, state: seed.max(1) }
    }

    pub fn next(&mut self) -> Duration {
        if self.jitter.is_zero() {
            return self.delay;
        }
        // xorshift64*: plenty for spreading delays, and reproducible by seed.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
        let offset = (unit * 2.0 - 1.0) * self.jitter.as_secs_f64();
        Duration::from_secs_f64((self.delay.as_secs_f64() + offset).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_jitter_every_packet_gets_the_same_delay() {
        let mut s = Schedule::new(Duration::from_millis(3), Duration::ZERO, 1);
        assert!((0..100).all(|_| s.next() == Duration::from_millis(3)));
    }

    #[test]
    fn jitter_spreads_delays_evenly_within_its_bounds() {
        let mut s = Schedule::new(Duration::from_millis(10), Duration::from_millis(4), 7);
        let d: Vec<f64> = (0..20_000).map(|_| s.next().as_secs_f64() * 1e3).collect();
        assert!(d.iter().all(|&x| (6.0..=14.0).contains(&x)), "outside 10 ± 4 ms");
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!((mean - 10.0).abs() < 0.1, "mean {mean}");
        let low = d.iter().filter(|&&x| x < 8.0).count() as f64 / d.len() as f64;
        assert!((low - 0.25).abs() < 0.02, "a quarter should fall in the lowest quarter of the range: {low}");
    }

    #[test]
    fn jitter_larger_than_the_delay_never_goes_negative() {
        let mut s = Schedule::new(Duration::from_millis(1), Duration::from_millis(5), 3);
        assert!((0..1000).map(|_| s.next()).any(|d| d.is_zero()));
    }

    #[test]
    fn the_same_seed_gives_the_same_delays() {
        let (mut a, mut b) = (
            Schedule::new(Duration::ZERO, Duration::from_millis(1), 9),
            Schedule::new(Duration::ZERO, Duration::from_millis(1), 9),
        );
        assert!((0..100).all(|_| a.next() == b.next()));
    }
}
