use super::*;
use chrono::{FixedOffset, NaiveDate};
use proptest::prelude::*;

/// Europe/Berlin for 2026: CET (+1) until 2026-03-29 01:00 UTC, CEST (+2) until
/// 2026-10-25 01:00 UTC, CET after. Enough to test DST without a tz database.
#[derive(Debug, Clone, Copy)]
struct Berlin2026;

impl Berlin2026 {
    fn offset_at(utc: &NaiveDateTime) -> FixedOffset {
        let at = |m, d| {
            NaiveDate::from_ymd_opt(2026, m, d)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap()
        };
        let hours = if *utc >= at(3, 29) && *utc < at(10, 25) {
            2
        } else {
            1
        };
        FixedOffset::east_opt(hours * 3600).unwrap()
    }
}

impl TimeZone for Berlin2026 {
    type Offset = FixedOffset;

    fn from_offset(_: &FixedOffset) -> Self {
        Berlin2026
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<FixedOffset> {
        self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).unwrap())
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<FixedOffset> {
        // Earlier instant (larger offset) first, as `Ambiguous` wants.
        let valid: Vec<FixedOffset> = [2, 1]
            .into_iter()
            .map(|h| FixedOffset::east_opt(h * 3600).unwrap())
            .filter(|o| Self::offset_at(&(*local - *o)) == *o)
            .collect();
        match valid[..] {
            [] => MappedLocalTime::None,
            [o] => MappedLocalTime::Single(o),
            [a, b] => MappedLocalTime::Ambiguous(a, b),
            _ => unreachable!(),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
        Self::offset_at(&utc.and_hms_opt(0, 0, 0).unwrap())
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
        Self::offset_at(utc)
    }
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn fixed(hours: i32) -> FixedOffset {
    FixedOffset::east_opt(hours * 3600).unwrap()
}

fn snap(id: &str, time: DateTime<Utc>) -> SnapshotInfo {
    SnapshotInfo {
        id: id.to_owned(),
        time,
        hostname: "host".to_owned(),
        paths: vec!["/data".to_owned()],
        tags: Vec::new(),
        expires: None,
    }
}

fn far_future() -> DateTime<Utc> {
    utc(2040, 1, 1, 0, 0)
}

/// Ids kept, newest first, over all groups.
fn kept<Tz: TimeZone>(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
    tz: &Tz,
) -> Vec<String> {
    apply_policy(snapshots, policy, GroupBy::default(), far_future(), tz)
        .iter()
        .flat_map(|g| g.kept().map(|d| d.snapshot.id.clone()).collect::<Vec<_>>())
        .collect()
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn daily(n: u32) -> RetentionPolicy {
    RetentionPolicy::default().with_keep_daily(n)
}

#[test]
fn berlin_model_matches_the_2026_transitions() {
    let tz = Berlin2026;
    assert_eq!(utc(2026, 3, 29, 0, 59).with_timezone(&tz).hour(), 1);
    assert_eq!(utc(2026, 3, 29, 1, 0).with_timezone(&tz).hour(), 3);
    assert_eq!(utc(2026, 10, 25, 0, 59).with_timezone(&tz).hour(), 2);
    assert_eq!(utc(2026, 10, 25, 1, 0).with_timezone(&tz).hour(), 2);
    let local = |m, d, h, mi| {
        NaiveDate::from_ymd_opt(2026, m, d)
            .unwrap()
            .and_hms_opt(h, mi, 0)
            .unwrap()
    };
    assert!(matches!(
        tz.from_local_datetime(&local(3, 29, 2, 30)),
        MappedLocalTime::None
    ));
    assert!(matches!(
        tz.from_local_datetime(&local(10, 25, 2, 30)),
        MappedLocalTime::Ambiguous(..)
    ));
}

#[test]
fn keep_daily_uses_local_days_across_spring_forward() {
    let snapshots = [
        snap("01", utc(2026, 3, 27, 11, 0)),  // Berlin Mar 27 12:00 CET
        snap("02", utc(2026, 3, 28, 22, 30)), // Berlin Mar 28 23:30 CET
        snap("03", utc(2026, 3, 28, 23, 30)), // Berlin Mar 29 00:30 CET
        snap("04", utc(2026, 3, 29, 22, 30)), // Berlin Mar 30 00:30 CEST
    ];
    assert_eq!(
        kept(&snapshots, &daily(3), &Berlin2026),
        ids(&["04", "03", "02"])
    );
    // Without DST, 04 is Mar 29 23:30 and shares its day with 03.
    assert_eq!(
        kept(&snapshots, &daily(3), &fixed(1)),
        ids(&["04", "02", "01"])
    );
    assert_eq!(kept(&snapshots, &daily(3), &Utc), ids(&["04", "03", "01"]));
}

#[test]
fn keep_daily_uses_local_days_across_fall_back() {
    let snapshots = [
        snap("01", utc(2026, 10, 23, 10, 0)),  // Berlin Oct 23
        snap("02", utc(2026, 10, 24, 21, 30)), // Berlin Oct 24 23:30 CEST
        snap("03", utc(2026, 10, 24, 22, 30)), // Berlin Oct 25 00:30 CEST
        snap("04", utc(2026, 10, 25, 22, 30)), // Berlin Oct 25 23:30 CET
        snap("05", utc(2026, 10, 25, 23, 30)), // Berlin Oct 26 00:30 CET
    ];
    assert_eq!(
        kept(&snapshots, &daily(3), &Berlin2026),
        ids(&["05", "04", "02"])
    );
    // Summer time all year would put 04 on Oct 26.
    assert_eq!(
        kept(&snapshots, &daily(3), &fixed(2)),
        ids(&["05", "03", "02"])
    );
}

#[test]
fn repeated_fall_back_hour_is_one_hourly_bucket() {
    let snapshots = [
        snap("01", utc(2026, 10, 24, 20, 0)),
        snap("02", utc(2026, 10, 25, 0, 15)), // 02:15 CEST
        snap("03", utc(2026, 10, 25, 1, 15)), // 02:15 CET
        snap("04", utc(2026, 10, 25, 2, 15)), // 03:15 CET
    ];
    let policy = RetentionPolicy::default().with_keep_hourly(3);
    assert_eq!(
        kept(&snapshots, &policy, &Berlin2026),
        ids(&["04", "03", "01"])
    );
    assert_eq!(kept(&snapshots, &policy, &Utc), ids(&["04", "03", "02"]));
}

#[test]
fn keep_daily_depends_on_the_fixed_offset() {
    let snapshots = [
        snap("01", utc(2026, 6, 1, 12, 0)),
        snap("02", utc(2026, 6, 1, 23, 30)), // June 2 01:30 at +2, June 1 18:30 at -5
        snap("03", utc(2026, 6, 2, 10, 0)),
    ];
    assert_eq!(kept(&snapshots, &daily(2), &fixed(2)), ids(&["03", "01"]));
    assert_eq!(kept(&snapshots, &daily(2), &fixed(-5)), ids(&["03", "02"]));
}

#[test]
fn keep_hourly_keeps_newest_of_each_hour_and_the_oldest() {
    let snapshots = [
        snap("01", utc(2026, 5, 5, 10, 5)),
        snap("02", utc(2026, 5, 5, 10, 55)),
        snap("03", utc(2026, 5, 5, 11, 0)),
        snap("04", utc(2026, 5, 5, 11, 59)),
        snap("05", utc(2026, 5, 5, 12, 30)),
    ];
    let hourly = |n| RetentionPolicy::default().with_keep_hourly(n);
    assert_eq!(kept(&snapshots, &hourly(2), &Utc), ids(&["05", "04"]));
    // Three hours, count 4: the leftover count keeps the oldest snapshot too.
    assert_eq!(
        kept(&snapshots, &hourly(4), &Utc),
        ids(&["05", "04", "02", "01"])
    );
}

fn year_end_snapshots() -> Vec<SnapshotInfo> {
    // Daily at noon from Sat 2026-12-26 to Mon 2027-01-04.
    (0..10)
        .map(|i| {
            let time = utc(2026, 12, 26, 12, 0) + Duration::days(i);
            snap(&format!("{:02}", i + 1), time)
        })
        .collect()
}

#[test]
fn iso_week_53_of_2026_spans_the_new_year() {
    let week = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap().iso_week();
    assert_eq!(
        (week(2026, 12, 27).year(), week(2026, 12, 27).week()),
        (2026, 52)
    );
    assert_eq!(
        (week(2026, 12, 28).year(), week(2026, 12, 28).week()),
        (2026, 53)
    );
    assert_eq!(
        (week(2027, 1, 3).year(), week(2027, 1, 3).week()),
        (2026, 53)
    );
    assert_eq!(
        (week(2027, 1, 4).year(), week(2027, 1, 4).week()),
        (2027, 1)
    );

    // 10 = Jan 4 (2027-W01), 09 = Jan 3 (2026-W53), 02 = Dec 27 (2026-W52).
    let weekly = RetentionPolicy::default().with_keep_weekly(3);
    assert_eq!(
        kept(&year_end_snapshots(), &weekly, &Utc),
        ids(&["10", "09", "02"])
    );
}

#[test]
fn keep_yearly_uses_calendar_years_not_iso_years() {
    let yearly = |n| RetentionPolicy::default().with_keep_yearly(n);
    // 10 = 2027-01-04, 06 = 2026-12-31 (Jan 3 2027 is ISO 2026 but calendar 2027).
    assert_eq!(
        kept(&year_end_snapshots(), &yearly(2), &Utc),
        ids(&["10", "06"])
    );
    // Count left over at the end keeps the oldest (Dec 26).
    assert_eq!(
        kept(&year_end_snapshots(), &yearly(3), &Utc),
        ids(&["10", "06", "01"])
    );
}

#[test]
fn keep_yearly_year_boundary_is_local() {
    let snapshots = [
        snap("01", utc(2026, 6, 1, 12, 0)),
        snap("02", utc(2026, 12, 31, 23, 30)), // 2027-01-01 00:30 at +1
        snap("03", utc(2027, 1, 1, 0, 10)),
    ];
    let policy = RetentionPolicy::default().with_keep_yearly(2);
    assert_eq!(kept(&snapshots, &policy, &Utc), ids(&["03", "02"]));
    assert_eq!(kept(&snapshots, &policy, &fixed(1)), ids(&["03", "01"]));
}

#[test]
fn keep_monthly_around_month_ends() {
    let snapshots = [
        snap("01", utc(2026, 1, 15, 12, 0)),
        snap("02", utc(2026, 1, 31, 12, 0)),
        snap("03", utc(2026, 2, 1, 0, 10)), // Jan 31 23:10 at -1
        snap("04", utc(2026, 3, 1, 0, 30)), // Feb 28 23:30 at -1
    ];
    let monthly = RetentionPolicy::default().with_keep_monthly(3);
    assert_eq!(kept(&snapshots, &monthly, &Utc), ids(&["04", "03", "02"]));
    // Only two months at -1: the spare count keeps the oldest.
    assert_eq!(
        kept(&snapshots, &monthly, &fixed(-1)),
        ids(&["04", "03", "01"])
    );
}

#[test]
fn keep_last_and_unlimited() {
    let snapshots: Vec<SnapshotInfo> = (0..5)
        .map(|i| {
            snap(
                &format!("{i:02}"),
                utc(2026, 1, 1, 0, 0) + Duration::hours(i),
            )
        })
        .collect();
    let last = |n| RetentionPolicy::default().with_keep_last(n);
    assert_eq!(kept(&snapshots, &last(2), &Utc), ids(&["04", "03"]));
    assert_eq!(kept(&snapshots, &last(UNLIMITED), &Utc).len(), 5);
    // All on one day: unlimited daily keeps the newest and, as the oldest, the first.
    assert_eq!(
        kept(&snapshots, &daily(UNLIMITED), &Utc),
        ids(&["04", "00"])
    );
}

#[test]
fn equal_times_order_by_id() {
    let t = utc(2026, 1, 1, 0, 0);
    let snapshots = [snap("bb", t), snap("aa", t)];
    let policy = RetentionPolicy::default().with_keep_last(1);
    assert_eq!(kept(&snapshots, &policy, &Utc), ids(&["aa"]));
    let groups = apply_policy(&snapshots, &policy, GroupBy::default(), far_future(), &Utc);
    let order: Vec<&str> = groups[0]
        .decisions
        .iter()
        .map(|d| d.snapshot.id.as_str())
        .collect();
    assert_eq!(order, ["aa", "bb"]);
}

#[test]
fn subtract_from_clamps_to_month_end() {
    let back = |d: &str, t: DateTime<Utc>| parse_duration(d).unwrap().subtract_from(t);
    assert_eq!(back("1m", utc(2026, 3, 31, 12, 0)), utc(2026, 2, 28, 12, 0));
    assert_eq!(back("1m", utc(2028, 3, 31, 12, 0)), utc(2028, 2, 29, 12, 0));
    assert_eq!(back("1y", utc(2028, 2, 29, 12, 0)), utc(2027, 2, 28, 12, 0));
    assert_eq!(
        back("1y2m3d4h", utc(2026, 5, 31, 12, 0)),
        utc(2025, 3, 28, 8, 0)
    );
    assert_eq!(back("30d", utc(2026, 3, 1, 0, 0)), utc(2026, 1, 30, 0, 0));
    assert_eq!(
        back("4000000000y", utc(2026, 3, 1, 0, 0)),
        DateTime::<Utc>::MIN_UTC
    );
}

#[test]
fn subtract_from_across_dst_takes_the_earlier_instant() {
    let back = |d: &str, t: DateTime<Utc>| {
        parse_duration(d)
            .unwrap()
            .subtract_from(t.with_timezone(&Berlin2026))
            .with_timezone(&Utc)
    };
    // Mar 29 14:00 CEST - 1d = Mar 28 14:00 CET: 23 hours.
    assert_eq!(back("1d", utc(2026, 3, 29, 12, 0)), utc(2026, 3, 28, 13, 0));
    // Mar 30 02:30 CEST - 1d = Mar 29 02:30, which does not exist.
    assert_eq!(back("1d", utc(2026, 3, 30, 0, 30)), utc(2026, 3, 29, 0, 30));
    // Oct 26 02:30 CET - 1d = Oct 25 02:30, which exists twice.
    assert_eq!(
        back("1d", utc(2026, 10, 26, 1, 30)),
        utc(2026, 10, 25, 0, 30)
    );
}

#[test]
fn keep_within_counts_calendar_months_from_the_newest_snapshot() {
    let snapshots = [
        snap("01", utc(2026, 2, 28, 12, 0)), // exactly at the cutoff: outside
        snap("02", utc(2026, 2, 28, 12, 1)),
        snap("03", utc(2026, 3, 15, 0, 0)),
        snap("04", utc(2026, 3, 31, 12, 0)),
    ];
    let policy = RetentionPolicy::default().with_keep_within(parse_duration("1m").unwrap());
    assert_eq!(kept(&snapshots, &policy, &Utc), ids(&["04", "03", "02"]));
}

#[test]
fn keep_within_is_calendar_aware_in_local_time() {
    let snapshots = [
        snap("01", utc(2026, 3, 28, 12, 30)), // 23.5 h before the newest: outside
        snap("02", utc(2026, 3, 28, 13, 30)),
        snap("03", utc(2026, 3, 29, 12, 0)),
    ];
    let policy = RetentionPolicy::default().with_keep_within(parse_duration("1d").unwrap());
    assert_eq!(kept(&snapshots, &policy, &Berlin2026), ids(&["03", "02"]));
    assert_eq!(kept(&snapshots, &policy, &Utc), ids(&["03", "02", "01"]));
}

#[test]
fn keep_within_ignores_future_snapshots_when_finding_the_newest() {
    let now = utc(2026, 4, 10, 0, 0);
    let snapshots = [
        snap("01", utc(2026, 3, 1, 0, 0)),
        snap("02", utc(2026, 3, 9, 0, 0)),
        snap("03", utc(2026, 3, 10, 0, 0)),
        snap("04", utc(2026, 5, 1, 0, 0)), // after `now`
    ];
    let policy = RetentionPolicy::default().with_keep_within(parse_duration("2d").unwrap());
    let groups = apply_policy(&snapshots, &policy, GroupBy::default(), now, &Utc);
    let kept: Vec<&str> = groups[0].kept().map(|d| d.snapshot.id.as_str()).collect();
    assert_eq!(kept, ["04", "03", "02"]);
}

#[test]
fn keep_tag_entries_are_and_lists_combined_with_or() {
    let tagged = |id: &str, tags: &[&str]| SnapshotInfo {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..snap(
            id,
            utc(2026, 1, 1, 0, 0) + Duration::hours(id.parse().unwrap()),
        )
    };
    let snapshots = [
        tagged("01", &["a"]),
        tagged("02", &["a", "b"]),
        tagged("03", &["b"]),
        tagged("04", &[]),
        tagged("05", &["c"]),
    ];
    let tag = |entries: &[&str]| RetentionPolicy {
        keep_tags: entries.iter().map(|e| (*e).to_owned()).collect(),
        ..RetentionPolicy::default()
    };
    assert_eq!(kept(&snapshots, &tag(&["a"]), &Utc), ids(&["02", "01"]));
    assert_eq!(kept(&snapshots, &tag(&["a,b"]), &Utc), ids(&["02"]));
    assert_eq!(kept(&snapshots, &tag(&[""]), &Utc), ids(&["04"]));
    assert_eq!(
        kept(&snapshots, &tag(&["b", "c"]), &Utc),
        ids(&["05", "03", "02"])
    );

    let groups = apply_policy(
        &snapshots,
        &tag(&["a", "b , a"]),
        GroupBy::default(),
        far_future(),
        &Utc,
    );
    let d02 = groups[0]
        .decisions
        .iter()
        .find(|d| d.snapshot.id == "02")
        .unwrap();
    assert_eq!(
        d02.reasons,
        [KeepReason::Tag("a".into()), KeepReason::Tag("b , a".into())]
    );
    assert_eq!(d02.reasons[1].to_string(), "has tags [b a]");
}

#[test]
fn reasons_list_every_rule_in_restic_order() {
    let snapshots = [snap("01", utc(2026, 1, 1, 0, 0))];
    let policy = RetentionPolicy::default()
        .with_keep_yearly(1)
        .with_keep_last(1)
        .with_keep_daily(1)
        .with_keep_within(parse_duration("1d").unwrap())
        .with_keep_tag("");
    let groups = apply_policy(&snapshots, &policy, GroupBy::default(), far_future(), &Utc);
    assert_eq!(
        groups[0].decisions[0].reasons,
        [
            KeepReason::Tag(String::new()),
            KeepReason::Within,
            KeepReason::Last,
            KeepReason::Daily,
            KeepReason::Yearly
        ]
    );
}

fn grouping_snapshots() -> Vec<SnapshotInfo> {
    let at = |id: &str, host: &str, paths: &[&str], tags: &[&str], hour| SnapshotInfo {
        id: id.to_owned(),
        time: utc(2026, 1, 1, hour, 0),
        hostname: host.to_owned(),
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        expires: None,
    };
    vec![
        at("01", "x", &["/a"], &["t"], 1),
        at("02", "x", &["/a"], &[], 2),
        at("03", "x", &["/b", "/a"], &[], 3),
        at("04", "x", &["/a", "/b"], &["t"], 4),
        at("05", "y", &["/a"], &[], 5),
    ]
}

fn grouped(group_by: &str) -> Vec<(GroupKey, Vec<String>)> {
    let policy = RetentionPolicy::default().with_keep_last(1);
    apply_policy(
        &grouping_snapshots(),
        &policy,
        group_by.parse().unwrap(),
        far_future(),
        &Utc,
    )
    .into_iter()
    .map(|g| {
        let kept = g.kept().map(|d| d.snapshot.id.clone()).collect();
        (g.key, kept)
    })
    .collect()
}

fn key(host: Option<&str>, paths: Option<&[&str]>, tags: Option<&[&str]>) -> GroupKey {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    GroupKey {
        hostname: host.map(str::to_owned),
        paths: paths.map(owned),
        tags: tags.map(owned),
    }
}

#[test]
fn groups_by_host_and_paths_by_default() {
    assert_eq!(GroupBy::default(), "host,paths".parse().unwrap());
    assert_eq!(
        grouped("host,paths"),
        [
            (key(Some("x"), Some(&["/a"]), None), ids(&["02"])),
            (key(Some("x"), Some(&["/a", "/b"]), None), ids(&["04"])),
            (key(Some("y"), Some(&["/a"]), None), ids(&["05"])),
        ]
    );
}

#[test]
fn groups_by_host_tags_or_nothing() {
    assert_eq!(
        grouped("host"),
        [
            (key(Some("x"), None, None), ids(&["04"])),
            (key(Some("y"), None, None), ids(&["05"])),
        ]
    );
    assert_eq!(
        grouped("tags"),
        [
            (key(None, None, Some(&[])), ids(&["05"])),
            (key(None, None, Some(&["t"])), ids(&["04"])),
        ]
    );
    assert_eq!(grouped(""), [(key(None, None, None), ids(&["05"]))]);
}

#[test]
fn group_by_parses_and_displays_like_restic() {
    let parse = |s: &str| s.parse::<GroupBy>();
    assert_eq!(parse("").unwrap(), GroupBy::NONE);
    assert_eq!(
        parse("tags,host").unwrap(),
        GroupBy {
            host: true,
            paths: false,
            tags: true
        }
    );
    assert_eq!(parse("hosts, path").unwrap(), GroupBy::default());
    assert_eq!(
        parse("host,paths,tags").unwrap().to_string(),
        "host,paths,tags"
    );
    assert_eq!(GroupBy::NONE.to_string(), "");
    assert_eq!(
        parse("host,disk"),
        Err(RetentionError::InvalidGroupBy {
            input: "host,disk".into(),
            option: "disk".into()
        })
    );
    let k = key(Some("srv"), Some(&["/etc", "/home"]), None);
    assert_eq!(k.to_string(), "host [srv], paths [/etc, /home]");
    assert_eq!(
        serde_json::to_string(&k).unwrap(),
        r#"{"hostname":"srv","paths":["/etc","/home"],"tags":null}"#
    );
}

#[test]
fn empty_policy_is_detected_and_keeps_everything() {
    assert!(RetentionPolicy::default().is_empty());
    let zeros = RetentionPolicy {
        keep_last: Some(0),
        keep_daily: Some(0),
        keep_within: Some(CalendarDuration::default()),
        ..RetentionPolicy::default()
    };
    assert!(zeros.is_empty());
    assert!(!RetentionPolicy::default().with_keep_last(1).is_empty());
    assert!(!RetentionPolicy::default().with_keep_tag("x").is_empty());
    assert!(!RetentionPolicy::default()
        .with_drop_expired(true)
        .is_empty());

    let snapshots = [snap("01", utc(2026, 1, 1, 0, 0))];
    let groups = apply_policy(&snapshots, &zeros, GroupBy::default(), far_future(), &Utc);
    assert_eq!(groups[0].decisions[0].reasons, [KeepReason::EmptyPolicy]);
    assert!(apply_policy(&[], &daily(1), GroupBy::default(), far_future(), &Utc).is_empty());
}

fn expiring_snapshots() -> Vec<SnapshotInfo> {
    let with = |id: &str, day, expires: Option<DateTime<Utc>>, tags: &[&str]| SnapshotInfo {
        expires,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..snap(id, utc(2026, 5, day, 0, 0))
    };
    vec![
        with("01", 1, Some(utc(2026, 5, 15, 0, 0)), &[]),
        with("02", 2, Some(utc(2026, 6, 1, 0, 0)), &[]), // expires exactly at `now`
        with("03", 3, Some(utc(2026, 7, 1, 0, 0)), &[]),
        with("04", 4, None, &[]),
        with("05", 5, Some(utc(2026, 5, 20, 0, 0)), &["keep"]),
        with("06", 10, Some(utc(2026, 5, 20, 0, 0)), &[]),
    ]
}

fn expiry_outcome(policy: &RetentionPolicy) -> Vec<(String, bool, Vec<KeepReason>, bool)> {
    let now = utc(2026, 6, 1, 0, 0);
    apply_policy(&expiring_snapshots(), policy, GroupBy::default(), now, &Utc)
        .remove(0)
        .decisions
        .into_iter()
        .map(|d| (d.snapshot.id, d.keep, d.reasons, d.expired))
        .collect()
}

#[test]
fn drop_expired_alone_keeps_everything_not_expired() {
    let outcome = expiry_outcome(&RetentionPolicy::default().with_drop_expired(true));
    let not_expired = || vec![KeepReason::NotExpired];
    assert_eq!(
        outcome,
        [
            ("06".into(), false, vec![], true),
            ("05".into(), false, vec![], true),
            ("04".into(), true, not_expired(), false),
            ("03".into(), true, not_expired(), false),
            ("02".into(), false, vec![], true),
            ("01".into(), false, vec![], true),
        ]
    );
}

#[test]
fn expired_snapshots_use_no_bucket_and_only_tags_keep_them() {
    let policy = RetentionPolicy::default()
        .with_drop_expired(true)
        .with_keep_last(1)
        .with_keep_tag("keep");
    let outcome = expiry_outcome(&policy);
    let kept: Vec<(&str, &[KeepReason])> = outcome
        .iter()
        .filter(|o| o.1)
        .map(|o| (o.0.as_str(), o.2.as_slice()))
        .collect();
    // 06 is newest but expired, so keep-last picks 04.
    assert_eq!(
        kept,
        [
            ("05", &[KeepReason::Tag("keep".into())][..]),
            ("04", &[KeepReason::Last][..])
        ]
    );
    assert!(
        outcome.iter().find(|o| o.0 == "05").unwrap().3,
        "05 is flagged expired"
    );
}

#[test]
fn expiry_is_informational_without_drop_expired() {
    let outcome = expiry_outcome(&RetentionPolicy::default().with_keep_last(10));
    assert!(outcome.iter().all(|o| o.1));
    let expired: Vec<&str> = outcome
        .iter()
        .filter(|o| o.3)
        .map(|o| o.0.as_str())
        .collect();
    assert_eq!(expired, ["06", "05", "02", "01"]);
}

#[test]
fn parse_duration_accepts_restic_forms() {
    let d = |y, m, d, h| CalendarDuration {
        years: y,
        months: m,
        days: d,
        hours: h,
    };
    assert_eq!(parse_duration("30d"), Ok(d(0, 0, 30, 0)));
    assert_eq!(parse_duration("12h"), Ok(d(0, 0, 0, 12)));
    assert_eq!(parse_duration("1y6m"), Ok(d(1, 6, 0, 0)));
    assert_eq!(parse_duration("1y2m3d4h"), Ok(d(1, 2, 3, 4)));
    assert_eq!(parse_duration("4h1y"), Ok(d(1, 0, 0, 4)));
    assert_eq!("1y6m".parse::<CalendarDuration>(), Ok(d(1, 6, 0, 0)));
    assert_eq!(d(1, 0, 2, 0).to_string(), "1y2d");
    assert_eq!(CalendarDuration::default().to_string(), "0h");
    for bad in [
        "",
        "5",
        "d",
        "3x",
        "1d1d",
        "-1d",
        "1 d",
        "1D",
        "99999999999d",
        "1dd",
    ] {
        assert!(
            matches!(
                parse_duration(bad),
                Err(RetentionError::InvalidDuration { .. })
            ),
            "{bad:?} should be rejected"
        );
    }
}

#[test]
fn reasons_display_and_serialize_as_restic_text() {
    let texts: Vec<String> = [
        KeepReason::Last,
        KeepReason::Hourly,
        KeepReason::Daily,
        KeepReason::Weekly,
        KeepReason::Monthly,
        KeepReason::Yearly,
        KeepReason::Tag("a,b".into()),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    assert_eq!(
        texts,
        [
            "last snapshot",
            "hourly snapshot",
            "daily snapshot",
            "weekly snapshot",
            "monthly snapshot",
            "yearly snapshot",
            "has tags [a b]"
        ]
    );
    assert_eq!(
        serde_json::to_string(&[KeepReason::Daily, KeepReason::NotExpired]).unwrap(),
        r#"["daily snapshot","not expired"]"#
    );
}

#[test]
fn policy_display_summarises_rules() {
    let policy = RetentionPolicy::default()
        .with_keep_daily(7)
        .with_keep_weekly(UNLIMITED)
        .with_keep_within(parse_duration("1m").unwrap());
    assert_eq!(
        policy.to_string(),
        "keep 7 daily, all weekly snapshots and all snapshots within 1m of the newest"
    );
    assert_eq!(
        RetentionPolicy::default()
            .with_keep_tag("a,b")
            .with_drop_expired(true)
            .to_string(),
        "remove expired snapshots, then keep all snapshots with tags [a b]"
    );
    assert_eq!(
        RetentionPolicy::default().to_string(),
        "keep all snapshots (empty policy)"
    );
}

// ---- properties ----

fn arb_snapshots() -> impl Strategy<Value = Vec<SnapshotInfo>> {
    let one = (
        0i64..2 * 366 * 24 * 60,
        0usize..2,
        0usize..2,
        proptest::sample::subsequence(vec!["t1", "t2"], 0..=2),
        proptest::option::of(0i64..2 * 366 * 24 * 60),
    );
    proptest::collection::vec(one, 0..40).prop_map(|items| {
        let base = utc(2025, 6, 1, 0, 0);
        items
            .into_iter()
            .enumerate()
            .map(|(i, (minute, host, path, tags, expires))| SnapshotInfo {
                id: format!("{i:08x}"),
                time: base + Duration::minutes(minute),
                hostname: ["a", "b"][host].to_owned(),
                paths: vec![["/x", "/y"][path].to_owned()],
                tags: tags.into_iter().map(str::to_owned).collect(),
                expires: expires.map(|m| base + Duration::minutes(m)),
            })
            .collect()
    })
}

fn arb_count() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(prop_oneof![0u32..6, Just(UNLIMITED)])
}

fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
    (
        [
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
            arb_count(),
        ],
        proptest::option::of((0u32..2, 0u32..3, 0u32..40, 0u32..48)),
        proptest::sample::subsequence(vec!["t1", "t2", "t1,t2", ""], 0..=2),
        any::<bool>(),
    )
        .prop_map(|(c, within, tags, drop_expired)| RetentionPolicy {
            keep_last: c[0],
            keep_hourly: c[1],
            keep_daily: c[2],
            keep_weekly: c[3],
            keep_monthly: c[4],
            keep_yearly: c[5],
            keep_within: within.map(|(years, months, days, hours)| CalendarDuration {
                years,
                months,
                days,
                hours,
            }),
            keep_tags: tags.into_iter().map(str::to_owned).collect(),
            drop_expired,
        })
}

fn arb_group_by() -> impl Strategy<Value = GroupBy> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(host, paths, tags)| GroupBy {
        host,
        paths,
        tags,
    })
}

fn arb_now() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..3 * 366 * 24 * 60).prop_map(|m| utc(2025, 6, 1, 0, 0) + Duration::minutes(m))
}

fn kept_set<Tz: TimeZone>(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
    group_by: GroupBy,
    now: DateTime<Utc>,
    tz: &Tz,
) -> std::collections::BTreeSet<String> {
    apply_policy(snapshots, policy, group_by, now, tz)
        .iter()
        .flat_map(|g| g.kept().map(|d| d.snapshot.id.clone()).collect::<Vec<_>>())
        .collect()
}

fn check_partition<Tz: TimeZone>(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
    group_by: GroupBy,
    now: DateTime<Utc>,
    tz: &Tz,
) -> Result<(), TestCaseError> {
    let groups = apply_policy(snapshots, policy, group_by, now, tz);
    let mut seen: Vec<&str> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if i > 0 {
            prop_assert!(groups[i - 1].key < g.key, "groups sorted and distinct");
        }
        prop_assert!(!g.decisions.is_empty());
        for (j, d) in g.decisions.iter().enumerate() {
            let input = snapshots.iter().find(|s| s.id == d.snapshot.id);
            prop_assert_eq!(
                Some(&d.snapshot),
                input,
                "decision carries an input snapshot"
            );
            prop_assert_eq!(&group_by.key(&d.snapshot), &g.key);
            prop_assert_eq!(d.keep, !d.reasons.is_empty());
            prop_assert_eq!(d.expired, d.snapshot.is_expired_at(now));
            if policy.drop_expired && d.expired && d.keep {
                prop_assert!(d.reasons.iter().all(|r| matches!(r, KeepReason::Tag(_))));
            }
            if j > 0 {
                let prev = &g.decisions[j - 1].snapshot;
                prop_assert_eq!(newest_first(prev, &d.snapshot), Ordering::Less);
            }
            seen.push(&d.snapshot.id);
        }
    }
    seen.sort_unstable();
    let mut expected: Vec<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
    expected.sort_unstable();
    prop_assert_eq!(seen, expected, "every snapshot exactly once");
    Ok(())
}

/// `base` with `extra`'s rules added (counts take the larger value).
fn with_rules_of(base: &RetentionPolicy, extra: &RetentionPolicy) -> RetentionPolicy {
    let more = |a: Option<u32>, b: Option<u32>| a.max(b);
    let mut keep_tags = base.keep_tags.clone();
    keep_tags.extend(extra.keep_tags.iter().cloned());
    RetentionPolicy {
        keep_last: more(base.keep_last, extra.keep_last),
        keep_hourly: more(base.keep_hourly, extra.keep_hourly),
        keep_daily: more(base.keep_daily, extra.keep_daily),
        keep_weekly: more(base.keep_weekly, extra.keep_weekly),
        keep_monthly: more(base.keep_monthly, extra.keep_monthly),
        keep_yearly: more(base.keep_yearly, extra.keep_yearly),
        keep_within: base.within().or(extra.keep_within),
        keep_tags,
        drop_expired: base.drop_expired,
    }
}

proptest! {
    #[test]
    fn every_snapshot_is_decided_exactly_once(
        snapshots in arb_snapshots(),
        policy in arb_policy(),
        group_by in arb_group_by(),
        now in arb_now(),
        offset_hours in -12i32..=14,
    ) {
        check_partition(&snapshots, &policy, group_by, now, &fixed(offset_hours))?;
        check_partition(&snapshots, &policy, group_by, now, &Berlin2026)?;
    }

    #[test]
    fn keep_last_keeps_min_of_n_and_group_size(
        snapshots in arb_snapshots(),
        n in 1u32..10,
        group_by in arb_group_by(),
    ) {
        let policy = RetentionPolicy::default().with_keep_last(n);
        for g in apply_policy(&snapshots, &policy, group_by, far_future(), &Berlin2026) {
            let expected = g.decisions.len().min(n as usize);
            prop_assert_eq!(g.kept().count(), expected);
            prop_assert!(g.decisions[..expected].iter().all(|d| d.keep), "the newest ones");
        }
    }

    #[test]
    fn adding_a_rule_never_removes_a_kept_snapshot(
        snapshots in arb_snapshots(),
        base in arb_policy().prop_filter("has a keep rule", RetentionPolicy::has_keep_rules),
        extra in arb_policy(),
        group_by in arb_group_by(),
        now in arb_now(),
        offset_hours in -12i32..=14,
    ) {
        let more = with_rules_of(&base, &extra);
        let tz = fixed(offset_hours);
        let before = kept_set(&snapshots, &base, group_by, now, &tz);
        let after = kept_set(&snapshots, &more, group_by, now, &tz);
        prop_assert!(before.is_subset(&after), "{:?} lost {:?}", more, before.difference(&after).collect::<Vec<_>>());
        let before = kept_set(&snapshots, &base, group_by, now, &Berlin2026);
        let after = kept_set(&snapshots, &more, group_by, now, &Berlin2026);
        prop_assert!(before.is_subset(&after));
    }

    #[test]
    fn duration_display_round_trips(
        years in 0u32..1000, months in 0u32..1000, days in 0u32..1000, hours in 0u32..1000,
    ) {
        let d = CalendarDuration { years, months, days, hours };
        prop_assert_eq!(parse_duration(&d.to_string()), Ok(d));
    }
}
