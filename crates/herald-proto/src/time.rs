//! Timestamps as RFC 3339 text in UTC with milliseconds (`2026-11-28T02:31:48.123Z`), the envelope's `time`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The length of [`write_rfc3339_millis`]'s text for years 0 to 9999.
pub const RFC3339_MILLIS_LEN: usize = 24;

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_rfc3339_millis(millis: u64) -> String {
    let mut out = Vec::with_capacity(RFC3339_MILLIS_LEN);
    write_rfc3339_millis(&mut out, millis);
    // Only ASCII digits and separators were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `millis` as `YYYY-MM-DDTHH:MM:SS.mmmZ` to `out`, digit by digit: every message's envelope and every
/// publish's answer carries one, and `format!` cost a publish more than the rest of its envelope (docs/BENCHMARKS.md,
/// "Publishers wait for each other, not for the writer's thread; the envelope without `format!`"). A year past
/// 9999 is written with all its digits, as `format!` did.
pub fn write_rfc3339_millis(out: &mut Vec<u8>, millis: u64) {
    let secs = millis / 1000;
    let (days, day_secs) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    if (0..10_000).contains(&year) {
        push_digits(out, year as u64, 4);
    } else {
        out.extend_from_slice(year.to_string().as_bytes());
    }
    out.push(b'-');
    push_digits(out, u64::from(month), 2);
    out.push(b'-');
    push_digits(out, u64::from(day), 2);
    out.push(b'T');
    push_digits(out, day_secs / 3600, 2);
    out.push(b':');
    push_digits(out, day_secs / 60 % 60, 2);
    out.push(b':');
    push_digits(out, day_secs % 60, 2);
    out.push(b'.');
    push_digits(out, millis % 1000, 3);
    out.push(b'Z');
}

/// Appends the last `width` decimal digits of `n`, zero-padded.
fn push_digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day) in the Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_millis(1_795_833_108_123), "2026-11-28T02:31:48.123Z");
        assert_eq!(format_rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_rfc3339_millis(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_millis(u64::MAX), reference(u64::MAX));
    }

    /// What the formatter wrote with `format!`, before it wrote digits itself.
    fn reference(millis: u64) -> String {
        let secs = millis / 1000;
        let (days, day_secs) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            day_secs / 3600,
            day_secs / 60 % 60,
            day_secs % 60,
            millis % 1000
        )
    }

    proptest::proptest! {
        #[test]
        fn writes_what_format_wrote(millis in proptest::prelude::any::<u64>()) {
            proptest::prop_assert_eq!(format_rfc3339_millis(millis), reference(millis));
        }

        #[test]
        fn is_24_bytes_through_year_9999(millis in 0u64..253_402_300_800_000) {
            proptest::prop_assert_eq!(format_rfc3339_millis(millis).len(), RFC3339_MILLIS_LEN);
        }
    }
}
