//! Go `time.Duration` text, as KubeBlocks' `metav1.Duration` fields carry it
//! (`status.duration: "1m30s"`, `exec.timeout: "30s"`).
//!
//! Invariants: [`GoDuration::parse`] accepts exactly what Go's `time.ParseDuration` accepts
//! (signed sequences of decimal numbers with a unit each: `ns`, `us`, `µs`, `μs`, `ms`, `s`,
//! `m`, `h`; a bare `0`), and refuses values beyond ±2^63-1 nanoseconds as Go does.
//! [`fmt::Display`] writes what Go's `Duration.String` writes (`0s`, `1.5ms`, `1h2m3.5s`,
//! `72h0m0s`), so a value read from a Go-written object is written back unchanged. A value
//! written in another spelling (`90s`) comes back in Go's (`1m30s`), as it would from
//! KubeBlocks itself.
//!
//! Fields of the API types hold a [`MetaDuration`], the text as written: the CRD types the
//! field as a plain string, so the API server stores any text there, and every object the
//! server accepts must still decode (one undecodable object would break a whole list or
//! watch). [`MetaDuration::parse`] interprets it when it is used.

use std::fmt;
use std::str::FromStr;

const NANOS_PER_MICRO: u64 = 1_000;
const NANOS_PER_MILLI: u64 = 1_000 * NANOS_PER_MICRO;
const NANOS_PER_SECOND: u64 = 1_000 * NANOS_PER_MILLI;
const NANOS_PER_MINUTE: u64 = 60 * NANOS_PER_SECOND;
const NANOS_PER_HOUR: u64 = 60 * NANOS_PER_MINUTE;

/// A signed duration in nanoseconds, read and written in Go's `time.Duration` text form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration {
    nanos: i64,
}

/// Why a duration text was refused; the message names the text, as Go's does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GoDurationError {
    /// Not of the form `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`.
    #[error("time: invalid duration {0:?}")]
    Invalid(String),
    /// A number without a unit (other than a bare `0`).
    #[error("time: missing unit in duration {0:?}")]
    MissingUnit(String),
    /// A unit Go does not know.
    #[error("time: unknown unit {unit:?} in duration {text:?}")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole text.
        text: String,
    },
    /// More than 2^63-1 nanoseconds in magnitude.
    #[error("time: invalid duration {0:?} (out of range)")]
    OutOfRange(String),
}

impl GoDuration {
    /// Zero, written `0s`.
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        GoDuration { nanos }
    }

    /// Whole seconds; saturates at the range of `i64` nanoseconds (about 292 years).
    pub const fn from_secs(secs: i64) -> Self {
        GoDuration {
            nanos: secs.saturating_mul(NANOS_PER_SECOND as i64),
        }
    }

    /// The length in nanoseconds (negative for negative durations).
    pub const fn as_nanos(self) -> i64 {
        self.nanos
    }

    /// The length as a `std` duration, or `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.nanos)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// A `std` duration, or `None` beyond 2^63-1 nanoseconds.
    pub fn from_std(d: std::time::Duration) -> Option<Self> {
        i64::try_from(d.as_nanos())
            .ok()
            .map(|nanos| GoDuration { nanos })
    }

    /// Parses Go's `time.ParseDuration` syntax.
    ///
    /// # Errors
    /// [`GoDurationError`] for anything Go refuses (empty text, a missing or unknown unit,
    /// a stray character, more than 2^63-1 nanoseconds).
    pub fn parse(text: &str) -> Result<Self, GoDurationError> {
        let invalid = || GoDurationError::Invalid(text.to_string());
        let mut s = text;
        let mut neg = false;
        if let Some(rest) = s.strip_prefix('-') {
            neg = true;
            s = rest;
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest;
        }
        if s == "0" {
            return Ok(GoDuration::ZERO);
        }
        if s.is_empty() {
            return Err(invalid());
        }
        // Sum in u64 so that -2^63 itself is representable, as in Go.
        let mut total: u64 = 0;
        while !s.is_empty() {
            let first = s.as_bytes()[0];
            if !(first == b'.' || first.is_ascii_digit()) {
                return Err(invalid());
            }
            // Integer part.
            let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
            let (int_digits, rest) = s.split_at(int_len);
            let pre = !int_digits.is_empty();
            let whole = parse_digits(int_digits)
                .ok_or_else(|| GoDurationError::OutOfRange(text.to_string()))?;
            s = rest;
            // Fraction: digits are taken while they fit in 63 bits, the rest ignored, and
            // the fraction is scaled in floating point, exactly as Go does (so that
            // "0.3333333333333333333h" is 20m, not a nanosecond less).
            let mut frac: u64 = 0;
            let mut scale: f64 = 1.0;
            let mut post = false;
            if let Some(rest) = s.strip_prefix('.') {
                let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
                let (frac_digits, rest) = rest.split_at(frac_len);
                post = !frac_digits.is_empty();
                let mut overflow = false;
                for d in frac_digits.bytes() {
                    if overflow || frac > (i64::MAX as u64) / 10 {
                        overflow = true;
                        continue;
                    }
                    let y = frac * 10 + u64::from(d - b'0');
                    if y > 1u64 << 63 {
                        overflow = true;
                        continue;
                    }
                    frac = y;
                    scale *= 10.0;
                }
                s = rest;
            }
            if !pre && !post {
                // ".s" or "." alone.
                return Err(invalid());
            }
            // Unit: everything up to the next digit or '.'.
            let unit_len = s
                .char_indices()
                .find(|(_, c)| *c == '.' || c.is_ascii_digit())
                .map_or(s.len(), |(i, _)| i);
            let (unit, rest) = s.split_at(unit_len);
            if unit.is_empty() {
                return Err(GoDurationError::MissingUnit(text.to_string()));
            }
            let per_unit = match unit {
                "ns" => 1,
                "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
                "ms" => NANOS_PER_MILLI,
                "s" => NANOS_PER_SECOND,
                "m" => NANOS_PER_MINUTE,
                "h" => NANOS_PER_HOUR,
                _ => {
                    return Err(GoDurationError::UnknownUnit {
                        unit: unit.to_string(),
                        text: text.to_string(),
                    })
                }
            };
            s = rest;
            let out_of_range = || GoDurationError::OutOfRange(text.to_string());
            let mut v = whole.checked_mul(per_unit).ok_or_else(out_of_range)?;
            if frac > 0 {
                // Go: v += int64(float64(f) * (float64(unit) / scale)).
                let f = (frac as f64 * (per_unit as f64 / scale)) as u64;
                v = v.checked_add(f).ok_or_else(out_of_range)?;
            }
            total = total.checked_add(v).ok_or_else(out_of_range)?;
            if total > 1u64 << 63 {
                return Err(out_of_range());
            }
        }
        if neg {
            // total <= 2^63 here.
            let nanos = if total == 1u64 << 63 {
                i64::MIN
            } else {
                -(total as i64)
            };
            Ok(GoDuration { nanos })
        } else if total > i64::MAX as u64 {
            Err(GoDurationError::OutOfRange(text.to_string()))
        } else {
            Ok(GoDuration {
                nanos: total as i64,
            })
        }
    }
}

fn parse_digits(digits: &str) -> Option<u64> {
    let mut v: u64 = 0;
    for d in digits.bytes() {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(v)
}

/// Writes `v / 10^prec` with the fraction's trailing zeros (and a bare point) left out.
fn push_frac(out: &mut String, v: u64, prec: u32) {
    let scale = 10u64.pow(prec);
    let whole = v / scale;
    let frac = v % scale;
    out.push_str(&whole.to_string());
    if frac != 0 {
        let digits = format!("{frac:0width$}", width = prec as usize);
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        if self.nanos < 0 {
            out.push('-');
        }
        let u = self.nanos.unsigned_abs();
        if u < NANOS_PER_SECOND {
            // Below a second Go picks the largest unit that keeps a whole number part.
            if u == 0 {
                out.push_str("0s");
                return f.write_str(&out);
            } else if u < NANOS_PER_MICRO {
                push_frac(&mut out, u, 0);
                out.push_str("ns");
            } else if u < NANOS_PER_MILLI {
                push_frac(&mut out, u, 3);
                out.push_str("\u{b5}s");
            } else {
                push_frac(&mut out, u, 6);
                out.push_str("ms");
            }
            return f.write_str(&out);
        }
        let hours = u / NANOS_PER_HOUR;
        let minutes = (u / NANOS_PER_MINUTE) % 60;
        let sec_nanos = u % NANOS_PER_MINUTE;
        if hours > 0 {
            out.push_str(&format!("{hours}h"));
        }
        if hours > 0 || minutes > 0 {
            out.push_str(&format!("{minutes}m"));
        }
        push_frac(&mut out, sec_nanos, 9);
        out.push('s');
        f.write_str(&out)
    }
}

impl FromStr for GoDuration {
    type Err = GoDurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl serde::Serialize for GoDuration {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        GoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A `metav1.Duration` field as written (`"1m30s"`); [`MetaDuration::parse`] reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct MetaDuration(pub String);

impl MetaDuration {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the text as Go's `time.ParseDuration` does.
    ///
    /// # Errors
    /// [`GoDurationError`] for any text Go refuses; KubeBlocks cannot decode such an
    /// object at all.
    pub fn parse(&self) -> Result<GoDuration, GoDurationError> {
        GoDuration::parse(&self.0)
    }
}

impl From<GoDuration> for MetaDuration {
    fn from(d: GoDuration) -> Self {
        MetaDuration(d.to_string())
    }
}

impl fmt::Display for MetaDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl schemars::JsonSchema for MetaDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MetaDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // metav1.Duration is a plain string in every CRD.
        schemars::json_schema!({ "type": "string" })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> GoDuration {
        GoDuration::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn formats_as_go_does() {
        // Pairs taken from the behaviour of Go's Duration.String.
        let cases: &[(i64, &str)] = &[
            (0, "0s"),
            (1, "1ns"),
            (1_100, "1.1\u{b5}s"),
            (2_200_000, "2.2ms"),
            (3_300_000_000, "3.3s"),
            (4 * 60 * 1_000_000_000 + 5_000_000_000, "4m5s"),
            (4 * 60 * 1_000_000_000 + 5_001_000_000, "4m5.001s"),
            (
                5 * 3_600_000_000_000 + 6 * 60_000_000_000 + 7_001_000_000,
                "5h6m7.001s",
            ),
            (8 * 60_000_000_000 + 1, "8m0.000000001s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (72 * 3_600_000_000_000, "72h0m0s"),
            (i64::MAX, "2562047h47m16.854775807s"),
            (i64::MIN, "-2562047h47m16.854775808s"),
            (-1_500_000, "-1.5ms"),
        ];
        for (nanos, text) in cases {
            assert_eq!(GoDuration::from_nanos(*nanos).to_string(), *text);
            assert_eq!(d(text).as_nanos(), *nanos, "{text}");
        }
    }

    #[test]
    fn parses_what_go_parses() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("5s", 5_000_000_000),
            ("30s", 30_000_000_000),
            ("1478s", 1_478_000_000_000),
            ("-5s", -5_000_000_000),
            ("+5s", 5_000_000_000),
            ("5.0s", 5_000_000_000),
            ("5.6s", 5_600_000_000),
            ("5.s", 5_000_000_000),
            (".5s", 500_000_000),
            ("1.004s", 1_004_000_000),
            ("100.00100s", 100_001_000_000),
            ("10ns", 10),
            ("11us", 11_000),
            ("12\u{b5}s", 12_000),
            ("12\u{3bc}s", 12_000),
            ("13ms", 13_000_000),
            ("14s", 14_000_000_000),
            ("15m", 900_000_000_000),
            ("16h", 57_600_000_000_000),
            ("3h30m", 12_600_000_000_000),
            ("10.5s4m", 250_500_000_000),
            ("-2m3.4s", -123_400_000_000),
            ("1h2m3s4ms5us6ns", 3_723_004_005_006),
            ("39h9m14.425s", 140_954_425_000_000),
            ("52763797000ns", 52_763_797_000),
            ("0.3333333333333333333h", 1_200_000_000_000),
            ("9223372036854775807ns", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("9223372036s854ms775us807ns", i64::MAX),
        ];
        for (text, nanos) in cases {
            assert_eq!(d(text).as_nanos(), *nanos, "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for text in [
            "",
            "3",
            "-",
            "s",
            ".",
            "-.",
            ".s",
            "+.s",
            "1d",
            "\u{ffd}",
            "1ms2",
            "3000000h",
            "9223372036854775808ns",
            "-9223372036854775809ns",
            "1 s",
            " 1s",
        ] {
            assert!(GoDuration::parse(text).is_err(), "{text:?} accepted");
        }
        assert!(matches!(
            GoDuration::parse("3"),
            Err(GoDurationError::MissingUnit(_))
        ));
        assert!(matches!(
            GoDuration::parse("1d"),
            Err(GoDurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            GoDuration::parse("3000000h"),
            Err(GoDurationError::OutOfRange(_))
        ));
    }

    #[test]
    fn serde_keeps_go_text() {
        let v: GoDuration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1m30s\"");
        // Another spelling comes back in Go's canonical form.
        let v: GoDuration = serde_json::from_str("\"90s\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1m30s\"");
        let err = serde_json::from_str::<GoDuration>("\"ten seconds\"").unwrap_err();
        assert!(err.to_string().contains("ten seconds"), "{err}");
    }

    #[test]
    fn meta_duration_keeps_any_text() {
        let v: MetaDuration = serde_json::from_str("\"90s\"").unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"90s\"");
        assert_eq!(v.parse().unwrap(), d("1m30s"));
        let bad: MetaDuration = serde_json::from_str("\"soon\"").unwrap();
        assert!(bad.parse().is_err());
        assert_eq!(MetaDuration::from(d("90s")).as_str(), "1m30s");
    }

    #[test]
    fn std_conversions() {
        assert_eq!(
            d("1m30s").to_std(),
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(d("-1s").to_std(), None);
        assert_eq!(
            GoDuration::from_std(std::time::Duration::from_millis(1500)),
            Some(d("1.5s"))
        );
        assert_eq!(GoDuration::from_secs(90).to_string(), "1m30s");
    }
}
