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
mod tests;
