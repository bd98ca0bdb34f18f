//! KubeBlocks' `RetentionPeriod`: how long a Backup is kept, written `"1y2mo3w4d5h6m"`.
//!
//! The text is kept as written (it is a plain string in the CRD, and a Backup read and
//! written back must not change), and interpreted on demand the way KubeBlocks does:
//! - units `y` = 365 days, `mo` = 30 days, `w` = 7 days, `d`, `h`, `m` = minutes; `mo` is
//!   recognised before `m`;
//! - surrounding white space is ignored; the empty text means "keep forever" (zero);
//! - a unit given twice counts once, the later one wins (`"1d2d"` is two days);
//! - no sign, no fraction, no seconds, no space between parts.
//!
//! One deliberate difference: where KubeBlocks' arithmetic would silently overflow (a count
//! of years beyond what 64-bit nanoseconds hold), this returns an error.

use std::fmt;

const MINUTES_PER_HOUR: u64 = 60;
const MINUTES_PER_DAY: u64 = 24 * MINUTES_PER_HOUR;
const MINUTES_PER_WEEK: u64 = 7 * MINUTES_PER_DAY;
const MINUTES_PER_MONTH: u64 = 30 * MINUTES_PER_DAY;
const MINUTES_PER_YEAR: u64 = 365 * MINUTES_PER_DAY;
/// The longest period a Go `time.Duration` holds, in whole minutes.
const MAX_MINUTES: u64 = (i64::MAX as u64) / 60_000_000_000;

/// A retention period as written in a Backup or a BackupSchedule (`"7d"`, `"1y6mo"`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RetentionPeriod(pub String);

/// The parts of a retention period, each as written (a unit given twice keeps the later).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionParts {
    /// `y`: 365 days each.
    pub years: u64,
    /// `mo`: 30 days each.
    pub months: u64,
    /// `w`: 7 days each.
    pub weeks: u64,
    /// `d`.
    pub days: u64,
    /// `h`.
    pub hours: u64,
    /// `m`.
    pub minutes: u64,
}

/// Why a retention period was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionPeriodError {
    /// Not of the form `1y2mo3w4d5h6m` (KubeBlocks says "invalid duration provided").
    #[error(
        "invalid retention period {text:?}: {reason} (expected e.g. \"7d\", \"1y6mo\", \"12h30m\")"
    )]
    Invalid {
        /// The text as written.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Longer than a 64-bit nanosecond duration holds (about 292 years).
    #[error("retention period {0:?} is too long (at most about 292 years)")]
    TooLong(String),
}

impl RetentionPeriod {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when empty (after trimming): the backup is kept until deleted by hand.
    pub fn is_forever(&self) -> bool {
        self.0.trim().is_empty()
    }

    /// Splits the text into its parts.
    ///
    /// # Errors
    /// [`RetentionPeriodError::Invalid`] for a sign, a missing number or unit, an unknown
    /// unit, or a number too large for 64 bits.
    pub fn parts(&self) -> Result<RetentionParts, RetentionPeriodError> {
        let invalid = |reason| RetentionPeriodError::Invalid {
            text: self.0.clone(),
            reason,
        };
        let mut parts = RetentionParts::default();
        let mut s = self.0.trim();
        while !s.is_empty() {
            if s.starts_with('-') {
                return Err(invalid("negative numbers are not allowed"));
            }
            // KubeBlocks takes every Unicode number character into the number, then fails
            // to convert anything but ASCII digits: the same texts are refused here.
            let num_len = s
                .char_indices()
                .find(|(_, c)| !c.is_numeric())
                .map_or(s.len(), |(i, _)| i);
            let (digits, rest) = s.split_at(num_len);
            if digits.is_empty() {
                return Err(invalid("a number must come before each unit"));
            }
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid("numbers must be written with the digits 0-9"));
            }
            let num: u64 = digits
                .parse()
                .map_err(|_| invalid("a number is too large"))?;
            if num > i64::MAX as u64 {
                return Err(invalid("a number is too large"));
            }
            if rest.is_empty() {
                return Err(invalid("the last number has no unit"));
            }
            s = rest;
            if let Some(rest) = s.strip_prefix("mo") {
                parts.months = num;
                s = rest;
                continue;
            }
            let slot = match s.as_bytes()[0] {
                b'y' => &mut parts.years,
                b'w' => &mut parts.weeks,
                b'd' => &mut parts.days,
                b'h' => &mut parts.hours,
                b'm' => &mut parts.minutes,
                _ => return Err(invalid("units are y, mo, w, d, h and m")),
            };
            *slot = num;
            s = &s[1..];
        }
        Ok(parts)
    }

    /// The period in whole minutes (0 for "forever").
    ///
    /// # Errors
    /// As [`RetentionPeriod::parts`], and [`RetentionPeriodError::TooLong`] beyond what
    /// a 64-bit nanosecond duration holds.
    pub fn minutes(&self) -> Result<u64, RetentionPeriodError> {
        let p = self.parts()?;
        let too_long = || RetentionPeriodError::TooLong(self.0.clone());
        let terms = [
            (p.minutes, 1),
            (p.hours, MINUTES_PER_HOUR),
            (p.days, MINUTES_PER_DAY),
            (p.weeks, MINUTES_PER_WEEK),
            (p.months, MINUTES_PER_MONTH),
            (p.years, MINUTES_PER_YEAR),
        ];
        let mut total: u64 = 0;
        for (n, per) in terms {
            total = n
                .checked_mul(per)
                .and_then(|m| total.checked_add(m))
                .ok_or_else(too_long)?;
        }
        if total > MAX_MINUTES {
            return Err(too_long());
        }
        Ok(total)
    }

    /// The period as a duration (zero for "forever").
    ///
    /// # Errors
    /// As [`RetentionPeriod::minutes`].
    pub fn to_duration(&self) -> Result<std::time::Duration, RetentionPeriodError> {
        Ok(std::time::Duration::from_secs(self.minutes()? * 60))
    }

    /// The shortest text for a number of minutes, in the largest units that divide it
    /// (`10080` -> `"7d"`, `90` -> `"1h30m"`, `0` -> `""`, i.e. forever). Years and months
    /// are never used, since they are made of days anyway (`"365d"`, not `"1y"`).
    pub fn from_minutes(minutes: u64) -> Self {
        let mut out = String::new();
        let days = minutes / MINUTES_PER_DAY;
        let hours = (minutes % MINUTES_PER_DAY) / MINUTES_PER_HOUR;
        let mins = minutes % MINUTES_PER_HOUR;
        for (n, unit) in [(days, "d"), (hours, "h"), (mins, "m")] {
            if n > 0 {
                out.push_str(&format!("{n}{unit}"));
            }
        }
        RetentionPeriod(out)
    }

    /// A period of whole days (`30` -> `"30d"`).
    pub fn from_days(days: u64) -> Self {
        RetentionPeriod(if days == 0 {
            String::new()
        } else {
            format!("{days}d")
        })
    }
}

impl fmt::Display for RetentionPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for RetentionPeriod {
    fn from(s: &str) -> Self {
        RetentionPeriod(s.to_string())
    }
}

impl schemars::JsonSchema for RetentionPeriod {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetentionPeriod".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // A plain string in KubeBlocks' CRDs; interpreted by the controller.
        schemars::json_schema!({ "type": "string" })
    }

    fn inline_schema() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minutes(s: &str) -> u64 {
        RetentionPeriod::from(s)
            .minutes()
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn reads_every_unit_as_kubeblocks_does() {
        assert_eq!(minutes(""), 0);
        assert_eq!(minutes("  "), 0);
        assert_eq!(minutes("7d"), 7 * 24 * 60);
        assert_eq!(minutes("30m"), 30);
        assert_eq!(minutes("12h"), 12 * 60);
        assert_eq!(minutes("2w"), 14 * 24 * 60);
        assert_eq!(minutes("6mo"), 6 * 30 * 24 * 60);
        assert_eq!(minutes("2y"), 2 * 365 * 24 * 60);
        assert_eq!(
            minutes("1y2mo3w4d5h6m"),
            365 * 1440 + 2 * 30 * 1440 + 3 * 7 * 1440 + 4 * 1440 + 5 * 60 + 6
        );
        // "mo" is months even right before "m".
        assert_eq!(minutes("1mo1m"), 30 * 1440 + 1);
        // Order is free and a repeated unit keeps the later value.
        assert_eq!(minutes("5m1d"), 1440 + 5);
        assert_eq!(minutes("1d2d"), 2 * 1440);
        assert_eq!(minutes(" 30d12h30m "), 30 * 1440 + 12 * 60 + 30);
        assert_eq!(minutes("0d"), 0);
        assert_eq!(
            RetentionPeriod::from("90m").to_duration().unwrap(),
            std::time::Duration::from_secs(5400)
        );
    }

    #[test]
    fn refuses_what_kubeblocks_refuses() {
        for text in [
            "7",
            "d",
            "-1d",
            "1.5d",
            "1s",
            "1 d",
            "1d 2h",
            "7D",
            "1M",
            "mo",
            "1dd",
            "１d",
            "٣d",
            "99999999999999999999d",
        ] {
            let err = RetentionPeriod::from(text).minutes().unwrap_err();
            assert!(
                matches!(err, RetentionPeriodError::Invalid { .. }),
                "{text:?}: {err}"
            );
            assert!(err.to_string().contains(text), "{err}");
        }
    }

    #[test]
    fn refuses_periods_beyond_a_go_duration() {
        assert_eq!(minutes("292y"), 292 * 365 * 1440);
        assert!(matches!(
            RetentionPeriod::from("293y").minutes(),
            Err(RetentionPeriodError::TooLong(_))
        ));
        assert!(matches!(
            RetentionPeriod::from("9223372036854775807y").minutes(),
            Err(RetentionPeriodError::TooLong(_))
        ));
    }

    #[test]
    fn formats_shortest_text() {
        assert_eq!(RetentionPeriod::from_minutes(0).as_str(), "");
        assert_eq!(RetentionPeriod::from_minutes(10080).as_str(), "7d");
        assert_eq!(RetentionPeriod::from_minutes(90).as_str(), "1h30m");
        assert_eq!(RetentionPeriod::from_minutes(1441).as_str(), "1d1m");
        assert_eq!(RetentionPeriod::from_days(30).as_str(), "30d");
        assert!(RetentionPeriod::from_days(0).is_forever());
        for m in [0, 1, 59, 60, 61, 1439, 1440, 525_600, 1_000_003] {
            assert_eq!(minutes(RetentionPeriod::from_minutes(m).as_str()), m);
        }
    }

    #[test]
    fn serde_keeps_the_text() {
        let p: RetentionPeriod = serde_json::from_str("\"1y2mo\"").unwrap();
        assert_eq!(p.as_str(), "1y2mo");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"1y2mo\"");
    }
}
