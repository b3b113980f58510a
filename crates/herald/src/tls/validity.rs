//! When a certificate stops being valid, read from its DER bytes: the two dates of its `validity` field, which
//! decide when an ACME certificate is renewed (and what `/metrics` says of the one being served).
//!
//! A pure function over the few fields that precede `validity` in a certificate (RFC 5280, 4.1): it walks the
//! DER headers without interpreting anything else, so it needs no X.509 library.

use std::time::{Duration, SystemTime};

/// The period a certificate is valid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: SystemTime,
    /// `notAfter`.
    pub not_after: SystemTime,
}

impl Validity {
    /// When to renew: once two thirds of the lifetime have passed (30 days before the end of a 90-day
    /// certificate, as certbot and Caddy do).
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        self.not_before + lifetime / 3 * 2
    }
}

/// The validity of the certificate `der`, or `None` when the bytes are not shaped like a certificate.
pub fn of(der: &[u8]) -> Option<Validity> {
    let (certificate, _) = element(der, 0x30)?;
    let (mut tbs, _) = element(certificate, 0x30)?;
    if tbs.first() == Some(&0xA0) {
        tbs = skip(tbs)?; // [0] version
    }
    tbs = skip_tagged(tbs, 0x02)?; // serialNumber
    tbs = skip_tagged(tbs, 0x30)?; // signature
    tbs = skip_tagged(tbs, 0x30)?; // issuer
    let (validity, _) = element(tbs, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some(Validity { not_before, not_after })
}

/// The contents of the element at the start of `der` when its tag is `tag`, and what follows it.
fn element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *der.first()? != tag {
        return None;
    }
    let (length, header) = match *der.get(1)? {
        short @ 0..=0x7F => (usize::from(short), 2),
        long => {
            let count = usize::from(long & 0x7F);
            if count == 0 || count > 4 {
                return None;
            }
            let bytes = der.get(2..2 + count)?;
            (bytes.iter().fold(0usize, |n, b| n << 8 | usize::from(*b)), 2 + count)
        }
    };
    let end = header.checked_add(length)?;
    Some((der.get(header..end)?, der.get(end..)?))
}

fn skip(der: &[u8]) -> Option<&[u8]> {
    let tag = *der.first()?;
    element(der, tag).map(|(_, rest)| rest)
}

fn skip_tagged(der: &[u8], tag: u8) -> Option<&[u8]> {
    element(der, tag).map(|(_, rest)| rest)
}

/// A `Time`: UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(der: &[u8]) -> Option<(SystemTime, &[u8])> {
    let tag = *der.first()?;
    let (text, rest) = element(der, tag)?;
    let (year, digits) = match (tag, text.len()) {
        (0x17, 13) => {
            let yy = number(&text[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 15) => (number(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if digits.last() != Some(&b'Z') {
        return None;
    }
    let field = |at: usize| number(&digits[at..at + 2]);
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days.checked_mul(86_400)? + i64::from(hour * 3600 + minute * 60 + second);
    let at = u64::try_from(seconds).ok().map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))?;
    Some((at, rest))
}

fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's algorithm).
fn days_from_civil(year: u32, month: u32, day: u32) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn unix(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_generated_certificate_s_dates_are_read() {
        let mut params = rcgen::CertificateParams::new(vec!["herald.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2027, 1, 15);
        params.not_after = rcgen::date_time_ymd(2061, 4, 1); // past 2049: a GeneralizedTime
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let validity = of(cert.der()).expect("a certificate");
        assert_eq!(validity.not_before, unix(1_800_000_000 - 8 * 3600)); // 2027-01-15T00:00:00Z
        assert_eq!(validity.not_after, unix(2_879_539_200)); // 2061-04-01T00:00:00Z
    }

    #[test]
    fn renewal_falls_two_thirds_into_the_lifetime() {
        let validity = Validity { not_before: unix(0), not_after: unix(90 * 86_400) };
        assert_eq!(validity.renew_at(), unix(60 * 86_400));
    }

    #[test]
    fn anything_else_is_not_a_certificate() {
        for bytes in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x01", b"\x30\x84\xff\xff\xff\xff", b"not der"] {
            assert_eq!(of(bytes), None, "{bytes:?}");
        }
    }

    proptest! {
        #[test]
        fn every_date_reads_back_in_both_encodings(seconds in 0u64..4_102_444_800) {
            let at = unix(seconds);
            let text = httpdate::fmt_http_date(at); // e.g. "Fri, 15 Jan 2027 08:00:00 GMT"
            let parts: Vec<&str> = text.split([' ', ':']).collect();
            let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
                .iter().position(|m| *m == parts[2]).unwrap() + 1;
            let generalized = format!("{}{month:02}{}{}{}{}Z", parts[3], parts[1], parts[4], parts[5], parts[6]);
            let mut der = vec![0x18, generalized.len() as u8];
            der.extend_from_slice(generalized.as_bytes());
            prop_assert_eq!(time(&der).map(|(t, _)| t), Some(at));
            let year: u32 = parts[3].parse().unwrap();
            if (1950..2050).contains(&year) {
                let mut der = vec![0x17, 13];
                der.extend_from_slice(&generalized.as_bytes()[2..]);
                prop_assert_eq!(time(&der).map(|(t, _)| t), Some(at));
            }
        }
    }
}
