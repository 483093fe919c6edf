//! Wall-clock time as Vault shows it: RFC 3339 with nanoseconds for API
//! timestamps, PostgreSQL's `VALID UNTIL` format for `{{expiration}}`, and
//! Go-style duration strings (`"72h"`, `"1h30m"`) for TTLs. No I/O beyond
//! reading the clock.

use std::time::{SystemTime, UNIX_EPOCH};

pub const NANOS: u64 = 1_000_000_000;

/// Nanoseconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn secs(nanos: u64) -> u64 {
    nanos / NANOS
}

/// Days since the epoch to (year, month, day), proleptic Gregorian.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn parts(nanos: u64) -> (i64, u32, u32, u64, u64, u64, u64) {
    let secs = nanos / NANOS;
    let (y, mo, d) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (y, mo, d, rem / 3600, rem % 3600 / 60, rem % 60, nanos % NANOS)
}

/// Go's RFC3339Nano in UTC: `2018-03-22T02:24:06.945319214Z`, trailing
/// zeros of the fraction dropped.
pub fn rfc3339(nanos: u64) -> String {
    let (y, mo, d, h, mi, s, frac) = parts(nanos);
    let mut out = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if frac != 0 {
        let f = format!("{frac:09}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The `{{expiration}}` of database statements: `2006-01-02 15:04:05+0000`.
pub fn pg_time(nanos: u64) -> String {
    let (y, mo, d, h, mi, s, _) = parts(nanos);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}+0000")
}

/// Seconds in a duration string: plain seconds (`"3600"`) or a sequence of
/// number-unit pairs with units `d`, `h`, `m`, `s`, `ms`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let bad = || format!("a duration like \"72h\" or \"30m\", got {s:?}");
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "d" => 86_400.0,
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_521_685_446 * NANOS + 945_319_214), "2018-03-22T02:24:06.945319214Z");
        assert_eq!(rfc3339(951_782_400 * NANOS + 500_000_000), "2000-02-29T00:00:00.5Z");
        assert_eq!(pg_time(1_700_000_000 * NANOS), "2023-11-14 22:13:20+0000");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("3600").unwrap(), 3600);
        assert_eq!(parse_duration("72h").unwrap(), 259_200);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
