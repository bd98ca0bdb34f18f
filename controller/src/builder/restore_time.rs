//! Times as restore scripts receive them: in the backup's time zone
//! (`status.timeRange.timeZone`, an offset such as `+08:00`) and in the Go layout the
//! ActionSet names in `DP_TIME_FORMAT` (default RFC 3339), as KubeBlocks formats them.
//!
//! Go layouts are written with the reference time `Mon Jan 2 15:04:05 MST 2006`; every
//! element of it that addon ActionSets use is understood here ([`format_go`]). Anything
//! else in a layout is copied as written, as Go does.
//!
//! One deliberate difference: KubeBlocks moves times into the zone with
//! `time.FixedZone("UTC", offset)`, so the layout element `MST` prints `UTC` even for
//! `+08:00` and a script handing the text to a database restores eight hours off. Here
//! `MST` prints `UTC` only at offset zero, else the numeric offset (`+0800`), which every
//! database's time parser reads correctly.

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

/// Go's `time.RFC3339`, KubeBlocks' default `DP_TIME_FORMAT`.
pub const RFC3339_LAYOUT: &str = "2006-01-02T15:04:05Z07:00";

/// Reads a KubeBlocks time zone (`+08:00`, `-07:30`): exactly six characters, sign,
/// hours, colon, minutes. `None` for anything else (KubeBlocks then keeps UTC).
pub fn parse_zone(zone: &str) -> Option<FixedOffset> {
    let b = zone.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let hours: i32 = zone.get(1..3)?.parse().ok()?;
    let minutes: i32 = zone.get(4..6)?.parse().ok()?;
    if hours > 14 || minutes > 59 {
        return None;
    }
    FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// `t` in the zone `zone` (UTC when the zone is absent or unreadable).
pub fn in_zone(t: DateTime<Utc>, zone: Option<&str>) -> DateTime<FixedOffset> {
    let offset = zone
        .and_then(parse_zone)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset"));
    t.with_timezone(&offset)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

fn offset_text(secs: i32, colon: bool, minutes: bool) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.unsigned_abs();
    let (h, m) = (abs / 3600, (abs % 3600) / 60);
    match (minutes, colon) {
        (false, _) => format!("{sign}{h:02}"),
        (true, true) => format!("{sign}{h:02}:{m:02}"),
        (true, false) => format!("{sign}{h:02}{m:02}"),
    }
}

/// Formats `t` with the Go layout `layout` (second precision: fractional-second elements
/// `.000` print zeros, `.999` print nothing).
pub fn format_go(t: DateTime<FixedOffset>, layout: &str) -> String {
    let offset = t.offset().local_minus_utc();
    let mut out = String::new();
    let mut rest = layout;
    // Longest elements first, so `January` wins over `Jan` and `2006` over `2`.
    while !rest.is_empty() {
        let tokens: &[(&str, &dyn Fn() -> String)] = &[
            ("January", &|| MONTHS[t.month0() as usize].to_string()),
            ("Monday", &|| {
                DAYS[t.weekday().num_days_from_monday() as usize].to_string()
            }),
            ("Z07:00", &|| {
                if offset == 0 {
                    "Z".into()
                } else {
                    offset_text(offset, true, true)
                }
            }),
            ("-07:00", &|| offset_text(offset, true, true)),
            ("Z0700", &|| {
                if offset == 0 {
                    "Z".into()
                } else {
                    offset_text(offset, false, true)
                }
            }),
            ("-0700", &|| offset_text(offset, false, true)),
            ("2006", &|| format!("{:04}", t.year())),
            ("Jan", &|| MONTHS[t.month0() as usize][..3].to_string()),
            ("Mon", &|| {
                DAYS[t.weekday().num_days_from_monday() as usize][..3].to_string()
            }),
            ("MST", &|| {
                if offset == 0 {
                    "UTC".into()
                } else {
                    offset_text(offset, false, true)
                }
            }),
            ("-07", &|| offset_text(offset, false, false)),
            ("002", &|| format!("{:03}", t.ordinal())),
            ("01", &|| format!("{:02}", t.month())),
            ("02", &|| format!("{:02}", t.day())),
            ("_2", &|| format!("{:>2}", t.day())),
            ("06", &|| format!("{:02}", t.year() % 100)),
            ("15", &|| format!("{:02}", t.hour())),
            ("03", &|| format!("{:02}", t.hour12().1)),
            ("04", &|| format!("{:02}", t.minute())),
            ("05", &|| format!("{:02}", t.second())),
            ("PM", &|| (if t.hour() >= 12 { "PM" } else { "AM" }).into()),
            ("pm", &|| (if t.hour() >= 12 { "pm" } else { "am" }).into()),
            ("1", &|| t.month().to_string()),
            ("2", &|| t.day().to_string()),
            ("3", &|| t.hour12().1.to_string()),
            ("4", &|| t.minute().to_string()),
            ("5", &|| t.second().to_string()),
        ];
        // Fractional seconds: `.` or `,` followed by a run of 0s or 9s.
        if let Some(after) = rest.strip_prefix(['.', ',']) {
            let zeros = after.bytes().take_while(|b| *b == b'0').count();
            let nines = after.bytes().take_while(|b| *b == b'9').count();
            let next_digit = |n: usize| after.as_bytes().get(n).is_some_and(u8::is_ascii_digit);
            if zeros > 0 && !next_digit(zeros) {
                out.push_str(&rest[..1]);
                out.push_str(&"0".repeat(zeros));
                rest = &after[zeros..];
                continue;
            }
            if nines > 0 && !next_digit(nines) {
                rest = &after[nines..];
                continue;
            }
        }
        if let Some((tok, f)) = tokens.iter().find(|(tok, _)| rest.starts_with(tok)) {
            out.push_str(&f());
            rest = &rest[tok.len()..];
            continue;
        }
        let c = rest.chars().next().expect("non-empty");
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn zones_read_as_kubeblocks_reads_them() {
        assert_eq!(parse_zone("+08:00").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(
            parse_zone("-03:30").unwrap().local_minus_utc(),
            -(3 * 3600 + 1800)
        );
        for bad in ["", "+8:00", "08:00", "+08-00", "+08:0x", "+99:00"] {
            assert!(parse_zone(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn layouts_format_like_go() {
        let utc = in_zone(t("2026-03-04T05:06:07Z"), None);
        assert_eq!(format_go(utc, RFC3339_LAYOUT), "2026-03-04T05:06:07Z");
        let east = in_zone(t("2026-03-04T20:06:07Z"), Some("+08:00"));
        assert_eq!(format_go(east, RFC3339_LAYOUT), "2026-03-05T04:06:07+08:00");
        // The layouts KubeBlocks addons put in DP_TIME_FORMAT.
        assert_eq!(
            format_go(east, "2006-01-02 15:04:05 MST"),
            "2026-03-05 04:06:07 +0800"
        );
        assert_eq!(
            format_go(utc, "2006-01-02 15:04:05 MST"),
            "2026-03-04 05:06:07 UTC"
        );
        assert_eq!(format_go(utc, "2006-01-02 15:04:05"), "2026-03-04 05:06:07");
        assert_eq!(
            format_go(utc, "Jan 02,2006 15:04:05 UTC-0700"),
            "Mar 04,2026 05:06:07 UTC+0000"
        );
        assert_eq!(
            format_go(utc, "Monday, January 2 3:04PM .000"),
            "Wednesday, March 4 5:06AM .000"
        );
        assert_eq!(format_go(utc, "20060102150405.999"), "20260304050607");
        assert_eq!(format_go(utc, "no elements here!"), "no elements here!");
    }
}
