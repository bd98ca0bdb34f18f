//! CronJob schedules, evaluated as kube-controller-manager evaluates them (it uses the
//! robfig/cron "standard" parser): five fields (minute, hour, day of month, month, day of
//! week) with `*`, `?`, ranges, steps, lists and English names; the descriptors `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` and `@every
//! <duration>`; an optional `TZ=<zone>` or `CRON_TZ=<zone>` prefix (the CronJob's
//! `spec.timeZone` becomes such a prefix). When both day fields are restricted a day
//! matches either; when one of them starts with `*` or `?` both must match. Zones are read
//! from the system's zoneinfo, as Go's `time.LoadLocation` reads them.

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    zone: Zone,
}

#[derive(Debug, Clone)]
enum Kind {
    Fields(Fields),
    Every(i64),
}

#[derive(Debug, Clone)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

/// A time zone: UTC or a zoneinfo file.
#[derive(Debug, Clone)]
pub struct Zone {
    tz: Option<std::sync::Arc<tz::TimeZone>>,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Self {
        Zone { tz: None }
    }

    /// Loads a zone by IANA name from the system zoneinfo (`UTC` and `Local` as Go reads
    /// them).
    ///
    /// # Errors
    /// The message Go's `time.LoadLocation` gives for an unknown zone.
    pub fn load(name: &str) -> Result<Self, String> {
        if name.is_empty() || name == "UTC" {
            return Ok(Zone::utc());
        }
        if name == "Local" {
            return tz::TimeZone::local()
                .map(|t| Zone {
                    tz: Some(std::sync::Arc::new(t)),
                })
                .map_err(|e| e.to_string());
        }
        if name.starts_with('/')
            || name.split('/').any(|p| p == ".." || p.is_empty())
            || name.contains('\\')
        {
            return Err(format!("invalid time zone name {name:?}"));
        }
        let dirs = std::env::var("ZONEINFO").ok().into_iter().chain(
            [
                "/usr/share/zoneinfo",
                "/usr/share/lib/zoneinfo",
                "/usr/lib/locale/TZ",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        for d in dirs {
            let p = std::path::Path::new(&d).join(name);
            if let Ok(bytes) = std::fs::read(&p) {
                let t = tz::TimeZone::from_tz_data(&bytes)
                    .map_err(|e| format!("invalid zoneinfo {}: {e}", p.display()))?;
                return Ok(Zone {
                    tz: Some(std::sync::Arc::new(t)),
                });
            }
        }
        Err(format!("unknown time zone {name}"))
    }

    /// UTC offset in seconds at a unix time.
    pub fn offset_at(&self, unix: i64) -> i64 {
        match &self.tz {
            None => 0,
            Some(t) => t
                .find_local_time_type(unix)
                .map_or(0, |l| i64::from(l.ut_offset())),
        }
    }

    /// The unix time of a wall-clock time: the earlier instant when it occurs twice, the
    /// pre-transition offset's reading when it falls into a gap.
    pub fn to_unix(&self, wall: NaiveDateTime) -> i64 {
        let l = wall.and_utc().timestamp();
        let before = self.offset_at(l - 86_400);
        let after = self.offset_at(l + 86_400);
        let mut valid: Vec<i64> = [before, after, self.offset_at(l)]
            .into_iter()
            .map(|o| l - o)
            .filter(|u| l - self.offset_at(*u) == *u)
            .collect();
        valid.sort_unstable();
        valid.first().copied().unwrap_or(l - before)
    }

    /// The wall-clock time of a unix time.
    pub fn wall(&self, unix: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(unix + self.offset_at(unix), 0)
            .unwrap_or_default()
            .naive_utc()
    }

    /// RFC 3339 text of a unix time in this zone (as Go's `Format(time.RFC3339)`).
    pub fn rfc3339(&self, unix: i64) -> String {
        let off = self.offset_at(unix);
        let w = self.wall(unix).format("%Y-%m-%dT%H:%M:%S").to_string();
        if off == 0 {
            return format!("{w}Z");
        }
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        format!("{w}{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
    }
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    names_start: u32,
}

fn parse_int_or_name(s: &str, b: &Bounds) -> Result<u32, String> {
    if let Some(i) = b.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + b.names_start);
    }
    parse_int(s)
}

fn parse_int(s: &str) -> Result<u32, String> {
    let n: i64 = s
        .parse()
        .map_err(|e| format!("failed to parse int from {s}: {e}"))?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {s}"));
    }
    u32::try_from(n).map_err(|_| format!("failed to parse int from {s}: value out of range"))
}

/// One comma-separated part: bits, and whether it was a star without a step.
fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut star) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (b.min, b.max, true)
    } else {
        let start = parse_int_or_name(low_and_high[0], b)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => parse_int_or_name(low_and_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end, false)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let s = parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            if s > 1 {
                star = false;
            }
            s
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut i = start;
    while i <= end {
        bits |= 1 << i;
        i += step;
    }
    Ok((bits, star))
}

fn field(f: &str, b: &Bounds) -> Result<(u64, bool), String> {
    let mut bits = 0;
    let mut star = false;
    for part in f.split(',') {
        let (x, s) = range(part, b)?;
        bits |= x;
        star |= s;
    }
    Ok((bits, star))
}

/// Parses a Go duration (`1h30m`, `90s`, `1.5h`) into whole seconds.
fn go_duration_secs(s: &str) -> Option<i64> {
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total.floor() as i64)
}

impl Schedule {
    /// Parses a schedule (with an optional `TZ=`/`CRON_TZ=` prefix).
    ///
    /// # Errors
    /// The parser's message, e.g. `expected exactly 5 fields, found 4: [...]`.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let mut spec = spec.trim().to_string();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut zone = Zone::utc();
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let i = spec
                .find(' ')
                .ok_or_else(|| format!("provided bad location {spec}: no schedule after it"))?;
            let eq = spec.find('=').expect("prefix has =");
            let name = &spec[eq + 1..i];
            zone = Zone::load(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
            spec = spec[i..].trim().to_string();
        }
        if let Some(d) = spec.strip_prefix('@') {
            let fields = match d {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => {
                    if let Some(dur) = d.strip_prefix("every ") {
                        let secs = go_duration_secs(dur.trim())
                            .ok_or_else(|| format!("failed to parse duration {spec}"))?;
                        return Ok(Schedule {
                            kind: Kind::Every(secs.max(1)),
                            zone,
                        });
                    }
                    return Err(format!("unrecognized descriptor: {spec}"));
                }
            };
            spec = fields.to_string();
        }
        let parts: Vec<&str> = spec.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {:?}",
                parts.len(),
                parts
            ));
        }
        let b = |min, max, names: &'static [&'static str], names_start| Bounds {
            min,
            max,
            names,
            names_start,
        };
        let (minute, _) = field(parts[0], &b(0, 59, &[], 0))?;
        let (hour, _) = field(parts[1], &b(0, 23, &[], 0))?;
        let (dom, dom_star) = field(parts[2], &b(1, 31, &[], 0))?;
        let (month, _) = field(parts[3], &b(1, 12, MONTHS, 1))?;
        let (dow, dow_star) = field(parts[4], &b(0, 6, DAYS, 0))?;
        Ok(Schedule {
            kind: Kind::Fields(Fields {
                minute,
                hour,
                dom,
                month,
                dow,
                dom_star,
                dow_star,
            }),
            zone,
        })
    }

    /// The schedule's zone.
    pub fn zone(&self) -> &Zone {
        &self.zone
    }

    /// The first activation strictly after `after` (unix seconds); None when there is
    /// none within five years.
    pub fn next(&self, after: i64) -> Option<i64> {
        let f = match &self.kind {
            Kind::Every(d) => return Some(after + d),
            Kind::Fields(f) => f,
        };
        let start_wall = self.zone.wall(after);
        let limit_year = start_wall.year() + 5;
        // The next whole minute of wall-clock time.
        let mut t = start_wall.with_second(0).expect("second 0") + chrono::Duration::minutes(1);
        let day_matches = |d: NaiveDate| {
            let dom_m = f.dom & (1 << d.day()) != 0;
            let dow_m = f.dow & (1 << d.weekday().num_days_from_sunday()) != 0;
            if f.dom_star || f.dow_star {
                dom_m && dow_m
            } else {
                dom_m || dow_m
            }
        };
        while t.year() <= limit_year {
            if f.month & (1 << t.month()) == 0 {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if f.hour & (1 << t.hour()) == 0 {
                t = t.with_minute(0)? + chrono::Duration::hours(1);
                continue;
            }
            if f.minute & (1 << t.minute()) == 0 {
                t += chrono::Duration::minutes(1);
                continue;
            }
            let u = self.zone.to_unix(t);
            if u > after {
                return Some(u);
            }
            t += chrono::Duration::minutes(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    fn next(spec: &str, after: &str) -> String {
        let s = Schedule::parse(spec).unwrap();
        let n = s.next(at(after)).expect("an activation");
        s.zone().rfc3339(n)
    }

    #[test]
    fn fields_ranges_steps_lists_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:07:00Z"),
            "2024-01-01T10:15:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2024-01-01T10:15:00Z"),
            "2024-01-01T10:30:00Z"
        );
        assert_eq!(
            next("5 4 * * *", "2024-01-01T10:15:00Z"),
            "2024-01-02T04:05:00Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2024-03-01T00:00:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("0 9 * * MON-FRI", "2024-01-05T10:00:00Z"),
            "2024-01-08T09:00:00Z"
        );
        assert_eq!(
            next("0 12 * * 0,6", "2024-01-03T00:00:00Z"),
            "2024-01-06T12:00:00Z"
        );
        assert_eq!(
            next("30 2 29 2 *", "2024-03-01T00:00:00Z"),
            "2028-02-29T02:30:00Z"
        );
        assert_eq!(
            next("5/20 * * * *", "2024-01-01T00:06:00Z"),
            "2024-01-01T00:25:00Z"
        );
        assert_eq!(
            next("10-12 * * * ?", "2024-01-01T00:11:30Z"),
            "2024-01-01T00:12:00Z"
        );
    }

    #[test]
    fn restricted_day_fields_match_either_unless_one_is_a_star() {
        // 2024-01-13 is a Saturday: day 15 or Saturday, whichever comes first.
        assert_eq!(
            next("0 0 15 * 6", "2024-01-10T00:00:00Z"),
            "2024-01-13T00:00:00Z"
        );
        // With a star day-of-week only the 15th counts.
        assert_eq!(
            next("0 0 15 * *", "2024-01-10T00:00:00Z"),
            "2024-01-15T00:00:00Z"
        );
        // `*/2` in day of month is a step, not a star: either day again.
        assert_eq!(
            next("0 0 */2 * 1", "2024-01-01T12:00:00Z"),
            "2024-01-03T00:00:00Z"
        );
    }

    #[test]
    fn descriptors_and_every() {
        assert_eq!(
            next("@hourly", "2024-01-01T10:07:00Z"),
            "2024-01-01T11:00:00Z"
        );
        assert_eq!(
            next("@daily", "2024-01-01T10:07:00Z"),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@midnight", "2024-01-01T10:07:00Z"),
            "2024-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2024-01-01T10:07:00Z"),
            "2024-01-07T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2024-01-01T10:07:00Z"),
            "2024-02-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2024-01-01T10:07:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@annually", "2024-01-01T10:07:00Z"),
            "2025-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@every 1h30m", "2024-01-01T10:07:00Z"),
            "2024-01-01T11:37:00Z"
        );
    }

    #[test]
    fn time_zones_from_prefix_and_dst() {
        // 09:00 in Tokyo (UTC+9) is 00:00 UTC.
        assert_eq!(
            next("CRON_TZ=Asia/Tokyo 0 9 * * *", "2024-01-01T01:00:00Z"),
            "2024-01-02T09:00:00+09:00"
        );
        assert_eq!(
            next("TZ=UTC 0 9 * * *", "2024-01-01T01:00:00Z"),
            "2024-01-01T09:00:00Z"
        );
        // New York springs forward on 2024-03-10: 02:30 does not exist that day.
        let s = Schedule::parse("TZ=America/New_York 30 2 * * *").unwrap();
        let n = s.next(at("2024-03-09T12:00:00Z")).unwrap();
        assert_eq!(s.zone().rfc3339(n), "2024-03-10T03:30:00-04:00");
        // And falls back on 2024-11-03: 01:30 happens twice, the first one is taken.
        let s = Schedule::parse("TZ=America/New_York 30 1 * * *").unwrap();
        let n = s.next(at("2024-11-03T00:00:00-04:00")).unwrap();
        assert_eq!(s.zone().rfc3339(n), "2024-11-03T01:30:00-04:00");
        // Summer offset in Europe.
        assert_eq!(
            next("CRON_TZ=Europe/Paris 0 3 * * *", "2024-07-01T00:00:00Z"),
            "2024-07-01T03:00:00+02:00"
        );
    }

    #[test]
    fn bad_schedules_are_refused_with_the_parsers_words() {
        let err = |s: &str| Schedule::parse(s).unwrap_err();
        assert!(err("* * * *").starts_with("expected exactly 5 fields, found 4"));
        assert!(err("60 * * * *").starts_with("end of range (60) above maximum (59)"));
        assert!(err("* * 0 * *").starts_with("beginning of range (0) below minimum (1)"));
        assert!(err("* * * * 7").starts_with("end of range (7) above maximum (6)"));
        assert!(err("5-1 * * * *").starts_with("beginning of range (5) beyond end of range (1)"));
        assert!(err("*/0 * * * *").starts_with("step of range should be a positive number"));
        assert!(err("* * * foo *").starts_with("failed to parse int from foo"));
        assert!(err("@fortnightly").starts_with("unrecognized descriptor"));
        assert!(err("TZ=Mars/Olympus 0 * * * *").starts_with("provided bad location Mars/Olympus"));
        assert!(err("TZ=../../etc/passwd 0 * * * *").starts_with("provided bad location"));
        assert!(err("").starts_with("empty spec string"));
    }

    #[test]
    fn impossible_dates_have_no_next() {
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(s.next(at("2024-01-01T00:00:00Z")), None);
    }
}
