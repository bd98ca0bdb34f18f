//! Retention policies for `dprepo forget`: which snapshots a policy keeps and why.
//!
//! This module owns the decision only; it reads no storage and deletes nothing. The CLI
//! turns the [`GroupDecision`]s returned by [`apply_policy`] into a printed plan and then
//! removes the snapshots marked `keep: false` (plan then apply).
//!
//! The semantics follow restic's `forget`:
//!
//! - Snapshots are split into groups ([`GroupBy`], default host + paths) and the policy is
//!   applied to each group on its own.
//! - Within a group snapshots are visited newest first (ties: smaller id first). A snapshot
//!   is kept if **any** rule keeps it; every keeping rule is listed in
//!   [`Decision::reasons`].
//! - `keep-last N` keeps the N newest. `keep-hourly/daily/weekly/monthly/yearly N` keep the
//!   newest snapshot of each of the last N hours/days/ISO weeks/months/years that have
//!   snapshots. Buckets are wall-clock periods in the caller's time zone, so a day is 23 or
//!   25 hours across a DST change and the repeated hour of a fall-back change is one bucket.
//!   While such a rule still has unused count when the oldest snapshot of the group is
//!   reached, that oldest snapshot is kept too (restic >= 0.16), which maximises the history
//!   that is kept.
//! - `keep-within D` keeps snapshots strictly newer than the newest snapshot of the group
//!   (ignoring snapshots dated after `now`) minus the calendar duration D.
//! - `keep-tag` keeps snapshots carrying the tags of any one entry.
//!
//! Invariants, checked by the property tests below: every input snapshot appears in exactly
//! one decision of exactly one group; a snapshot is kept iff it has at least one reason;
//! adding a keep rule to a policy that already has one never removes a snapshot that was
//! kept before; the result depends only on the arguments (the clock and the time zone are
//! parameters).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Days, Duration, MappedLocalTime, Months, NaiveDateTime, Offset, TimeZone,
    Timelike, Utc,
};
use serde::{Deserialize, Serialize, Serializer};

/// A `keep-*` count meaning "no limit" (restic's `-1`): one snapshot of every bucket that
/// has snapshots is kept.
pub const UNLIMITED: u32 = u32::MAX;

/// Why a policy could not be built from user input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// A `keep-within` style duration is not of the form `1y2m3d4h`.
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--group-by` value names something other than `host`, `paths` or `tags`.
    #[error("invalid group-by {input:?}: unknown grouping option {option:?} (expected host, paths or tags)")]
    InvalidGroupBy {
        /// The whole text that was given.
        input: String,
        /// The part that was not understood.
        option: String,
    },
}

/// A calendar-aware duration as taken by `--keep-within`, e.g. `1y6m` or `30d`.
///
/// Unlike a fixed number of seconds, "1m" back from March 31 is February 28 (or 29), and
/// "1d" back across a DST change is 23 or 25 hours; see [`CalendarDuration::subtract_from`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CalendarDuration {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Calendar days.
    pub days: u32,
    /// Hours of elapsed time.
    pub hours: u32,
}

impl CalendarDuration {
    /// True when every component is zero; a zero `keep-within` is treated as not set.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The instant this duration before `t`, computed in `t`'s time zone.
    ///
    /// Years and months are subtracted first on the local date, clamping the day to the end
    /// of a shorter month (March 31 - 1m = February 28/29, February 29 - 1y = February 28),
    /// then days on the local date keeping the wall-clock time, then hours as elapsed time.
    /// If the resulting wall-clock time falls in a DST gap or overlap, the earlier of the
    /// candidate instants is used, so a `keep-within` window only ever grows.
    /// A result before the earliest representable time saturates to it.
    pub fn subtract_from<Tz: TimeZone>(&self, t: DateTime<Tz>) -> DateTime<Tz> {
        let tz = t.timezone();
        match self.subtract_checked(&t.with_timezone(&Utc), &tz) {
            Some(instant) => instant.with_timezone(&tz),
            None => DateTime::<Utc>::MIN_UTC.with_timezone(&tz),
        }
    }

    fn subtract_checked<Tz: TimeZone>(&self, t: &DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        let local = local_naive(t, tz);
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        let date = local
            .date()
            .checked_sub_months(Months::new(months))?
            .checked_sub_days(Days::new(self.days.into()))?;
        let instant = local_to_instant(tz, date.and_time(local.time()))?;
        instant.checked_sub_signed(Duration::try_hours(self.hours.into())?)
    }
}

impl fmt::Display for CalendarDuration {
    /// restic's notation with zero components left out (`1y6m`, `30d`); zero prints `0h`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (value, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if value != 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for CalendarDuration {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

impl Serialize for CalendarDuration {
    /// Serialized in its [`Display`](fmt::Display) form, e.g. `"1y6m"`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Parses a restic-style duration: one or more `<number><unit>` pairs with units `y`
/// (years), `m` (months), `d` (days) and `h` (hours), e.g. `30d`, `12h`, `1y6m`, `1y2m3d4h`.
///
/// # Errors
///
/// [`RetentionError::InvalidDuration`] for an empty string, a number without a unit, a unit
/// without a number, an unknown unit (units are case-sensitive: `M` is not `m`), a unit given
/// twice, or a number that does not fit in `u32`. Signs and spaces are not accepted.
pub fn parse_duration(s: &str) -> Result<CalendarDuration, RetentionError> {
    let invalid = |reason: String| RetentionError::InvalidDuration {
        input: s.to_owned(),
        reason,
    };
    if s.is_empty() {
        return Err(invalid("empty duration".to_owned()));
    }
    let mut duration = CalendarDuration::default();
    let mut seen = [false; 4];
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid(format!("expected a number at {rest:?}")));
        }
        let (number, tail) = rest.split_at(digits);
        let value: u32 = number
            .parse()
            .map_err(|_| invalid(format!("number {number} is too large")))?;
        let mut chars = tail.chars();
        let Some(unit) = chars.next() else {
            return Err(invalid(format!(
                "no unit after number {number} (use y, m, d or h)"
            )));
        };
        let (slot, field) = match unit {
            'y' => (0, &mut duration.years),
            'm' => (1, &mut duration.months),
            'd' => (2, &mut duration.days),
            'h' => (3, &mut duration.hours),
            other => {
                return Err(invalid(format!(
                    "invalid unit {other:?} after number {number} (use y, m, d or h)"
                )))
            }
        };
        if seen[slot] {
            return Err(invalid(format!("unit {unit:?} given twice")));
        }
        seen[slot] = true;
        *field = value;
        rest = chars.as_str();
    }
    Ok(duration)
}

/// What `dprepo forget` keeps. `Default` sets no rule.
///
/// A count of `None` or `Some(0)` means the rule is not set (as restic's 0);
/// [`UNLIMITED`] keeps every bucket. A policy with no rule set [`is_empty`](Self::is_empty);
/// `forget` must refuse it rather than remove nothing or everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the N newest snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have snapshots.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have snapshots.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have snapshots.
    pub keep_yearly: Option<u32>,
    /// Keep snapshots strictly newer than the group's newest snapshot minus this duration.
    /// A zero duration is treated as not set.
    pub keep_within: Option<CalendarDuration>,
    /// Keep snapshots matching any entry. An entry is a comma-separated list of tags that
    /// must all be present (`"a,b"`); the empty entry `""` matches untagged snapshots.
    pub keep_tags: Vec<String>,
    /// Remove snapshots whose `expires` time is at or before `now`, whatever the count and
    /// time rules say; only `keep_tags` can still keep them. Expired snapshots do not take
    /// part in the count and time rules (they use no bucket and are not "the newest").
    /// If no keep rule is set, all snapshots that have not expired are kept
    /// ([`KeepReason::NotExpired`]).
    pub drop_expired: bool,
}

impl RetentionPolicy {
    /// True when no rule is set: `forget` must refuse such a policy, like restic.
    /// `drop_expired` alone counts as a rule.
    pub fn is_empty(&self) -> bool {
        !self.has_keep_rules() && !self.drop_expired
    }

    /// Sets `keep_last`.
    pub fn with_keep_last(mut self, n: u32) -> Self {
        self.keep_last = Some(n);
        self
    }

    /// Sets `keep_hourly`.
    pub fn with_keep_hourly(mut self, n: u32) -> Self {
        self.keep_hourly = Some(n);
        self
    }

    /// Sets `keep_daily`.
    pub fn with_keep_daily(mut self, n: u32) -> Self {
        self.keep_daily = Some(n);
        self
    }

    /// Sets `keep_weekly`.
    pub fn with_keep_weekly(mut self, n: u32) -> Self {
        self.keep_weekly = Some(n);
        self
    }

    /// Sets `keep_monthly`.
    pub fn with_keep_monthly(mut self, n: u32) -> Self {
        self.keep_monthly = Some(n);
        self
    }

    /// Sets `keep_yearly`.
    pub fn with_keep_yearly(mut self, n: u32) -> Self {
        self.keep_yearly = Some(n);
        self
    }

    /// Sets `keep_within`.
    pub fn with_keep_within(mut self, duration: CalendarDuration) -> Self {
        self.keep_within = Some(duration);
        self
    }

    /// Adds one `keep_tags` entry (comma-separated tags that must all be present).
    pub fn with_keep_tag(mut self, entry: impl Into<String>) -> Self {
        self.keep_tags.push(entry.into());
        self
    }

    /// Sets `drop_expired`.
    pub fn with_drop_expired(mut self, drop_expired: bool) -> Self {
        self.drop_expired = drop_expired;
        self
    }

    /// The count rules in restic's evaluation order, with their bucket and reason.
    fn count_rules(&self) -> [(Option<u32>, Bucket, KeepReason); 6] {
        [
            (self.keep_last, Bucket::Last, KeepReason::Last),
            (self.keep_hourly, Bucket::Hour, KeepReason::Hourly),
            (self.keep_daily, Bucket::Day, KeepReason::Daily),
            (self.keep_weekly, Bucket::IsoWeek, KeepReason::Weekly),
            (self.keep_monthly, Bucket::Month, KeepReason::Monthly),
            (self.keep_yearly, Bucket::Year, KeepReason::Yearly),
        ]
    }

    fn within(&self) -> Option<CalendarDuration> {
        self.keep_within.filter(|d| !d.is_zero())
    }

    /// True when a rule that keeps snapshots is set (everything but `drop_expired`).
    fn has_keep_rules(&self) -> bool {
        self.count_rules()
            .iter()
            .any(|(count, _, _)| count.is_some_and(|n| n > 0))
            || self.within().is_some()
            || !self.keep_tags.is_empty()
    }
}

impl fmt::Display for RetentionPolicy {
    /// A one-line summary in restic's words, e.g.
    /// `keep 7 daily, 4 weekly snapshots and all snapshots within 1m of the newest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("keep all snapshots (empty policy)");
        }
        let names = ["latest", "hourly", "daily", "weekly", "monthly", "yearly"];
        let counts: Vec<String> = self
            .count_rules()
            .iter()
            .zip(names)
            .filter_map(|((count, _, _), name)| match count {
                Some(UNLIMITED) => Some(format!("all {name}")),
                Some(n) if *n > 0 => Some(format!("{n} {name}")),
                _ => None,
            })
            .collect();
        let mut parts = Vec::new();
        if !counts.is_empty() {
            parts.push(format!("{} snapshots", counts.join(", ")));
        }
        if !self.keep_tags.is_empty() {
            let lists: Vec<String> = self
                .keep_tags
                .iter()
                .map(|entry| format!("[{}]", tag_entry(entry).join(" ")))
                .collect();
            parts.push(format!("all snapshots with tags {}", lists.join(" or ")));
        }
        if let Some(within) = self.within() {
            parts.push(format!("all snapshots within {within} of the newest"));
        }
        match (parts.is_empty(), self.drop_expired) {
            (true, _) => f.write_str("remove expired snapshots, keep all others"),
            (false, true) => write!(
                f,
                "remove expired snapshots, then keep {}",
                parts.join(" and ")
            ),
            (false, false) => write!(f, "keep {}", parts.join(" and ")),
        }
    }
}

/// The snapshot fields the policy looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Snapshot id, lowercase hex; breaks ties between snapshots with the same time.
    pub id: String,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// Host the snapshot was taken on.
    pub hostname: String,
    /// Backed-up paths, in any order.
    pub paths: Vec<String>,
    /// Tags, in any order.
    pub tags: Vec<String>,
    /// When the snapshot expires, if ever; see [`RetentionPolicy::drop_expired`].
    pub expires: Option<DateTime<Utc>>,
}

impl SnapshotInfo {
    /// True when the snapshot has an expiry time at or before `now`.
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|expires| expires <= now)
    }
}

/// Which snapshot fields put snapshots into the same group (restic's `--group-by`).
///
/// Parsed from a comma-separated list of `host`, `paths` and `tags` (the singular forms and
/// `hosts` are accepted too); the empty string means one group for everything.
/// `Default` is `host,paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupBy {
    /// Group by hostname.
    pub host: bool,
    /// Group by the set of paths.
    pub paths: bool,
    /// Group by the set of tags.
    pub tags: bool,
}

impl GroupBy {
    /// No grouping: the policy applies to all snapshots at once.
    pub const NONE: GroupBy = GroupBy {
        host: false,
        paths: false,
        tags: false,
    };

    /// The key of the group `snapshot` belongs to. Paths and tags are sorted, so their
    /// order in the snapshot does not matter.
    pub fn key(&self, snapshot: &SnapshotInfo) -> GroupKey {
        let sorted = |values: &[String]| {
            let mut values = values.to_vec();
            values.sort();
            values
        };
        GroupKey {
            hostname: self.host.then(|| snapshot.hostname.clone()),
            paths: self.paths.then(|| sorted(&snapshot.paths)),
            tags: self.tags.then(|| sorted(&snapshot.tags)),
        }
    }
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = RetentionError;

    /// # Errors
    ///
    /// [`RetentionError::InvalidGroupBy`] naming the first option that is not `host`,
    /// `paths` or `tags`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut group_by = GroupBy::NONE;
        for option in s.split(',').map(str::trim) {
            match option {
                "host" | "hosts" => group_by.host = true,
                "path" | "paths" => group_by.paths = true,
                "tag" | "tags" => group_by.tags = true,
                "" => {}
                other => {
                    return Err(RetentionError::InvalidGroupBy {
                        input: s.to_owned(),
                        option: other.to_owned(),
                    })
                }
            }
        }
        Ok(group_by)
    }
}

impl fmt::Display for GroupBy {
    /// The `--group-by` form, e.g. `host,paths`; empty for no grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [
            (self.host, "host"),
            (self.paths, "paths"),
            (self.tags, "tags"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
        f.write_str(&parts.join(","))
    }
}

/// Identifies one group; a field is `None` when [`GroupBy`] does not group by it.
/// Paths and tags are sorted. Groups are returned in this type's order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// The hostname, when grouping by host.
    pub hostname: Option<String>,
    /// The sorted paths, when grouping by paths.
    pub paths: Option<Vec<String>>,
    /// The sorted tags, when grouping by tags.
    pub tags: Option<Vec<String>>,
}

impl fmt::Display for GroupKey {
    /// restic's wording, e.g. `host [srv], paths [/etc, /home]`; empty without grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(hostname) = &self.hostname {
            parts.push(format!("host [{hostname}]"));
        }
        if let Some(paths) = &self.paths {
            parts.push(format!("paths [{}]", paths.join(", ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags [{}]", tags.join(", ")));
        }
        f.write_str(&parts.join(", "))
    }
}

/// Why a snapshot is kept. Displayed and serialized as restic's text, e.g. `daily snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeepReason {
    /// One of the `keep_last` newest.
    Last,
    /// Newest of its hour (`keep_hourly`).
    Hourly,
    /// Newest of its day (`keep_daily`).
    Daily,
    /// Newest of its ISO week (`keep_weekly`).
    Weekly,
    /// Newest of its month (`keep_monthly`).
    Monthly,
    /// Newest of its year (`keep_yearly`).
    Yearly,
    /// Inside the `keep_within` window.
    Within,
    /// Matches this `keep_tags` entry, as given in the policy.
    Tag(String),
    /// Not expired, and `drop_expired` is the only rule.
    NotExpired,
    /// The policy is empty, so nothing is removed (callers should refuse such a policy).
    EmptyPolicy,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Last => f.write_str("last snapshot"),
            KeepReason::Hourly => f.write_str("hourly snapshot"),
            KeepReason::Daily => f.write_str("daily snapshot"),
            KeepReason::Weekly => f.write_str("weekly snapshot"),
            KeepReason::Monthly => f.write_str("monthly snapshot"),
            KeepReason::Yearly => f.write_str("yearly snapshot"),
            KeepReason::Within => f.write_str("within keep-within"),
            KeepReason::Tag(entry) => write!(f, "has tags [{}]", tag_entry(entry).join(" ")),
            KeepReason::NotExpired => f.write_str("not expired"),
            KeepReason::EmptyPolicy => f.write_str("policy is empty"),
        }
    }
}

impl Serialize for KeepReason {
    /// Serialized as its [`Display`](fmt::Display) text.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The fate of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The snapshot, as given.
    pub snapshot: SnapshotInfo,
    /// Whether the snapshot stays; `keep == !reasons.is_empty()`.
    pub keep: bool,
    /// Every rule that keeps the snapshot, in restic's order (tags, within, last, hourly,
    /// daily, weekly, monthly, yearly); empty if it is removed.
    pub reasons: Vec<KeepReason>,
    /// The snapshot's expiry is at or before `now`. Informational unless the policy has
    /// `drop_expired` set; then it is the reason an untagged snapshot is removed.
    pub expired: bool,
}

/// The decisions for one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDecision {
    /// The group.
    pub key: GroupKey,
    /// One decision per snapshot of the group, newest first.
    pub decisions: Vec<Decision>,
}

impl GroupDecision {
    /// The decisions that keep their snapshot, newest first.
    pub fn kept(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep)
    }

    /// The decisions that remove their snapshot, newest first.
    pub fn removed(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Decides, for every snapshot, whether `policy` keeps it.
///
/// `now` decides which snapshots have expired and which are dated in the future (those are
/// not "the newest" for `keep_within`); `tz` is the zone whose wall clock defines the hour,
/// day, week, month and year buckets and the calendar arithmetic of `keep_within`.
///
/// Returns one [`GroupDecision`] per group in [`GroupKey`] order, each with its decisions
/// newest first; every input snapshot appears exactly once. An empty policy keeps
/// everything with [`KeepReason::EmptyPolicy`]; callers should check
/// [`RetentionPolicy::is_empty`] first and refuse.
pub fn apply_policy<Tz: TimeZone>(
    snapshots: &[SnapshotInfo],
    policy: &RetentionPolicy,
    group_by: GroupBy,
    now: DateTime<Utc>,
    tz: &Tz,
) -> Vec<GroupDecision> {
    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotInfo>> = BTreeMap::new();
    for snapshot in snapshots {
        groups
            .entry(group_by.key(snapshot))
            .or_default()
            .push(snapshot);
    }
    groups
        .into_iter()
        .map(|(key, mut group)| {
            group.sort_by(|a, b| newest_first(a, b));
            GroupDecision {
                key,
                decisions: decide_group(&group, policy, now, tz),
            }
        })
        .collect()
}

fn newest_first(a: &SnapshotInfo, b: &SnapshotInfo) -> Ordering {
    b.time.cmp(&a.time).then_with(|| a.id.cmp(&b.id))
}

/// `group` is sorted newest first.
fn decide_group<Tz: TimeZone>(
    group: &[&SnapshotInfo],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    tz: &Tz,
) -> Vec<Decision> {
    let expired: Vec<bool> = group.iter().map(|s| s.is_expired_at(now)).collect();
    let mut reasons: Vec<Vec<KeepReason>> = vec![Vec::new(); group.len()];

    if policy.is_empty() {
        for r in &mut reasons {
            r.push(KeepReason::EmptyPolicy);
        }
    } else {
        // Tags are not counted and may rescue expired snapshots.
        for (snapshot, r) in group.iter().zip(&mut reasons) {
            for entry in &policy.keep_tags {
                if tags_match(entry, &snapshot.tags) {
                    r.push(KeepReason::Tag(entry.clone()));
                }
            }
        }
        // Expired snapshots are invisible to the count and time rules, so they neither use
        // up a bucket nor hide a kept snapshot behind them.
        let candidates: Vec<usize> = (0..group.len())
            .filter(|&i| !(policy.drop_expired && expired[i]))
            .collect();
        if policy.has_keep_rules() {
            apply_time_rules(group, &candidates, policy, now, tz, &mut reasons);
        } else {
            for &i in &candidates {
                reasons[i].push(KeepReason::NotExpired);
            }
        }
    }

    group
        .iter()
        .zip(reasons)
        .zip(expired)
        .map(|((snapshot, reasons), expired)| Decision {
            snapshot: (*snapshot).clone(),
            keep: !reasons.is_empty(),
            reasons,
            expired,
        })
        .collect()
}

/// Applies `keep_within` and the count rules to `group[candidates]` (newest first).
fn apply_time_rules<Tz: TimeZone>(
    group: &[&SnapshotInfo],
    candidates: &[usize],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    tz: &Tz,
    reasons: &mut [Vec<KeepReason>],
) {
    if let Some(within) = policy.within() {
        // Like restic, measure from the newest snapshot that is not in the future; if there
        // is none, nothing is older than the window and everything is kept.
        let latest = candidates
            .iter()
            .map(|&i| group[i].time)
            .filter(|time| *time < now)
            .max();
        let cutoff = latest.map(|latest| {
            within
                .subtract_from(latest.with_timezone(tz))
                .with_timezone(&Utc)
        });
        for &i in candidates {
            let inside = match cutoff {
                Some(cutoff) => group[i].time > cutoff,
                None => true,
            };
            if inside {
                reasons[i].push(KeepReason::Within);
            }
        }
    }

    let locals: Vec<NaiveDateTime> = candidates
        .iter()
        .map(|&i| local_naive(&group[i].time, tz))
        .collect();
    for (count, bucket, reason) in policy.count_rules() {
        let Some(mut remaining) = count.filter(|&n| n > 0) else {
            continue;
        };
        let mut last_bucket = None;
        for (nr, (&i, local)) in candidates.iter().zip(&locals).enumerate() {
            if remaining == 0 {
                break;
            }
            let value = bucket.of(nr, local);
            // The oldest snapshot is kept while the rule has count left (restic >= 0.16).
            if last_bucket != Some(value) || nr + 1 == candidates.len() {
                reasons[i].push(reason.clone());
                last_bucket = Some(value);
                if remaining != UNLIMITED {
                    remaining -= 1;
                }
            }
        }
    }
}

/// The period a count rule keeps one snapshot of.
#[derive(Debug, Clone, Copy)]
enum Bucket {
    /// Every snapshot is its own bucket.
    Last,
    Hour,
    Day,
    IsoWeek,
    Month,
    Year,
}

impl Bucket {
    /// A number identifying the bucket of the `nr`-th snapshot (newest first), whose local
    /// wall-clock time is `local`; equal numbers mean the same bucket for this rule.
    fn of(self, nr: usize, local: &NaiveDateTime) -> i64 {
        let year = i64::from(local.year());
        let ymd = year * 10_000 + i64::from(local.month()) * 100 + i64::from(local.day());
        match self {
            Bucket::Last => i64::try_from(nr).unwrap_or(i64::MAX),
            Bucket::Hour => ymd * 100 + i64::from(local.hour()),
            Bucket::Day => ymd,
            Bucket::IsoWeek => {
                let week = local.date().iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Month => year * 100 + i64::from(local.month()),
            Bucket::Year => year,
        }
    }
}

/// The wall-clock time of `t` in `tz`; falls back to UTC at the edges of the representable
/// range instead of panicking like `DateTime::naive_local`.
fn local_naive<Tz: TimeZone>(t: &DateTime<Utc>, tz: &Tz) -> NaiveDateTime {
    let utc = t.naive_utc();
    let offset = tz.offset_from_utc_datetime(&utc).fix();
    utc.checked_add_signed(Duration::seconds(offset.local_minus_utc().into()))
        .unwrap_or(utc)
}

/// The instant at which `tz`'s wall clock shows `local`; in a DST overlap or gap the
/// earlier candidate.
fn local_to_instant<Tz: TimeZone>(tz: &Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        MappedLocalTime::Single(t) => Some(t.with_timezone(&Utc)),
        MappedLocalTime::Ambiguous(a, b) => Some(a.with_timezone(&Utc).min(b.with_timezone(&Utc))),
        MappedLocalTime::None => {
            // The wall time was skipped: read it with the offsets in force a day before and
            // a day after, and take the earlier instant.
            [-1, 1]
                .into_iter()
                .filter_map(|days| local.checked_add_signed(Duration::days(days)))
                .map(|probe| tz.offset_from_utc_datetime(&probe).fix())
                .filter_map(|offset| {
                    local.checked_sub_signed(Duration::seconds(offset.local_minus_utc().into()))
                })
                .min()
                .map(|utc| utc.and_utc())
        }
    }
}

/// The tags of one `keep_tags` entry: comma-separated, trimmed, empty parts dropped.
fn tag_entry(entry: &str) -> Vec<&str> {
    entry
        .split(',')
        .map(str::trim)
        .filter(|tag| !tag.is_empty())
        .collect()
}

fn tags_match(entry: &str, tags: &[String]) -> bool {
    let wanted = tag_entry(entry);
    if wanted.is_empty() {
        // restic: `--keep-tag ''` keeps untagged snapshots only.
        return tags.is_empty();
    }
    wanted.iter().all(|w| tags.iter().any(|t| t == w))
}

#[cfg(test)]
mod tests {
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

        fn offset_from_local_datetime(
            &self,
            local: &NaiveDateTime,
        ) -> MappedLocalTime<FixedOffset> {
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
}
