//! Schedules (docs/schedules.md): a cron pattern read in an IANA time zone, the instants it
//! names, and what a scheduler fires when it finds instants due. No I/O: the store keeps each
//! schedule's state, `tasker_runtime::scheduler` drives it on an injected clock.
//!
//! Instants are found on the local wall clock, then placed on the time line:
//! - a wall-clock time that does not exist (the hour skipped when clocks go forward) fires
//!   at the first instant after the gap (02:30 on Europe/Paris's spring-forward day fires at
//!   03:00 CEST); several such times fire once, together;
//! - a wall-clock time that happens twice (the hour repeated when clocks go back) fires once,
//!   at its first occurrence.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How late (after its instant) a scheduler may still fire an instant under
/// [`Missed::Skip`]: one poll of the scheduler loop and then some. Later, it was missed.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest name of a schedule made by hand.
pub const MAX_NAME_LEN: usize = 64;

/// What a scheduler does with instants that passed while no scheduler ran (or while it was
/// more than the grace late).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Fire nothing for them: the schedule resumes at its next future instant.
    #[default]
    Skip,
    /// Fire the most recent of them, once, late; the older ones are dropped.
    RunOnce,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::RunOnce => "run_once",
        }
    }
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Missed {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, ScheduleError> {
        match s {
            "skip" => Ok(Missed::Skip),
            "run_once" => Ok(Missed::RunOnce),
            other => Err(ScheduleError::Missed(other.to_owned())),
        }
    }
}

/// Why a schedule was refused; [`ScheduleError::field`] names the setting.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScheduleError {
    #[error(
        "'{cron}' is not a cron pattern (minute hour day-of-month month day-of-week): {reason}"
    )]
    Cron { cron: String, reason: String },
    #[error("'{cron}' never fires")]
    Never { cron: String },
    #[error("'{0}' is not an IANA time zone (like UTC or Europe/Paris)")]
    TimeZone(String),
    #[error("'{0}' is not skip or run_once")]
    Missed(String),
    #[error("schedule name {0}")]
    Name(String),
}

impl ScheduleError {
    /// The setting at fault: `cron`, `tz`, `missed` or `name`.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Cron { .. } | ScheduleError::Never { .. } => "cron",
            ScheduleError::TimeZone(_) => "tz",
            ScheduleError::Missed(_) => "missed",
            ScheduleError::Name(_) => "name",
        }
    }
}

/// A schedule made by hand: 1 to 64 letters, digits, `_`, `-` or `.`, starting with a letter,
/// digit or `_`. (A template's schedules are named `namespace/name:schedule`, see
/// [`template_schedule_name`], so the two never collide.)
pub fn check_name(name: &str) -> Result<(), ScheduleError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ScheduleError::Name(format!(
            "'{name}' is not 1 to {MAX_NAME_LEN} letters, digits, '_', '-' or '.' starting \
             with a letter, digit or '_'"
        )))
    }
}

/// The stored name of schedule `schedule` of template `namespace/name`.
pub fn template_schedule_name(namespace: &str, name: &str, schedule: &str) -> String {
    format!("{namespace}/{name}:{schedule}")
}

/// The identity key of the task that fires `instant` of schedule `name`: every scheduler
/// creates the same key, so the store's unique identity index keeps one task per instant.
pub fn identity_key(name: &str, instant: DateTime<Utc>) -> String {
    format!(
        "schedule:{name}:{}",
        instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

/// `t` on the wall clock of time zone `tz` (`2030-03-31 03:00 CEST`); None for an unknown
/// zone.
pub fn local_text(tz: &str, t: DateTime<Utc>) -> Option<String> {
    let tz: Tz = tz.parse().ok()?;
    Some(t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
}

/// A cron pattern in a time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    pattern: String,
    tz: Tz,
    cron: croner::Cron,
}

impl PartialEq for Cron {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern && self.tz == other.tz
    }
}

/// Wall-clock steps a search takes at most (a repeated or skipped hour of an every-minute
/// pattern takes 60; a normal one 1 or 2).
const MAX_STEPS: usize = 10_000;

/// How far (at most) a time zone's clock jumps: the backward search starts this far ahead on
/// the wall clock, so that a repeated hour's first occurrence is not passed over.
const MAX_SHIFT_HOURS: i64 = 3;

impl Cron {
    /// Five fields (minute hour day-of-month month day-of-week; names like `MON` and `JAN`,
    /// lists, ranges, steps, `L`, `W`, `#`, and `@hourly`-style nicknames), read in `tz`
    /// (an IANA name). A pattern that never matches (`0 0 30 2 *`) is refused.
    pub fn new(pattern: &str, tz: &str) -> Result<Cron, ScheduleError> {
        let tz: Tz = tz
            .parse()
            .map_err(|_| ScheduleError::TimeZone(tz.to_owned()))?;
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser.parse(pattern).map_err(|e| ScheduleError::Cron {
            cron: pattern.to_owned(),
            reason: e.to_string(),
        })?;
        let c = Cron {
            pattern: pattern.to_owned(),
            tz,
            cron,
        };
        // Any pattern that matches at all matches within 28 years (the calendar repeats).
        let from = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01");
        if c.next_after(from).is_none() {
            return Err(ScheduleError::Never {
                cron: pattern.to_owned(),
            });
        }
        Ok(c)
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The time zone's IANA name.
    pub fn tz(&self) -> &'static str {
        self.tz.name()
    }

    /// The first instant of the schedule strictly after `t` (None: none, ever).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Any wall-clock time before t's own maps at or before t (a skipped one to the gap's
        // end, a repeated one to its first occurrence), so the walk starts at t's minute.
        let mut wall = minute_of(t.with_timezone(&self.tz).naive_local());
        let mut inclusive = true;
        for _ in 0..MAX_STEPS {
            wall = self.cron.find_next_occurrence(&wall, inclusive).ok()?;
            inclusive = false;
            let at = self.place(wall)?;
            if at > t {
                return Some(at);
            }
        }
        None
    }

    /// The last instant of the schedule at or before `t` (None: none before it).
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&self.tz).naive_local();
        let mut wall = minute_of(local.checked_add_signed(Duration::hours(MAX_SHIFT_HOURS))?);
        let mut inclusive = true;
        for _ in 0..MAX_STEPS {
            wall = self.cron.find_previous_occurrence(&wall, inclusive).ok()?;
            inclusive = false;
            let at = self.place(wall)?;
            if at <= t {
                return Some(at);
            }
        }
        None
    }

    /// The next `n` instants after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// A wall-clock time of the zone on the time line: its only instant, the first of two
    /// (a repeated hour), or the first instant after a skipped hour.
    fn place(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
            LocalResult::None => {
                // Transitions fall on whole minutes; a gap lasts at most a day.
                let mut w = wall;
                for _ in 0..(24 * 60) {
                    w = w.checked_add_signed(Duration::minutes(1))?;
                    if let Some(t) = self.tz.from_local_datetime(&w).earliest() {
                        return Some(t.with_timezone(&Utc));
                    }
                }
                None
            }
        }
    }
}

fn minute_of(t: NaiveDateTime) -> NaiveDateTime {
    t.with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t)
}

/// What a scheduler does with a schedule whose next instant `due` has come (`due <= now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The instant to fire now (None: the due instants were all missed and `skip` drops them).
    pub fire: Option<DateTime<Utc>>,
    /// The schedule's next instant after this tick (None: it never fires again).
    pub next: Option<DateTime<Utc>>,
    /// Due instants not fired (older than the latest one, or the latest one too under
    /// `skip` when it is later than the grace); counted up to 1,000.
    pub missed: u32,
}

/// The tick of a schedule whose stored next instant is `due`, at `now` (None: not due yet).
///
/// The instants due are those from `due` to `now`. At most one fires, the latest: every
/// older one was missed. The latest fires if it is at most `grace` old, and with
/// [`Missed::RunOnce`] however old it is. The schedule then waits for its first instant after
/// `now`.
pub fn plan(
    cron: &Cron,
    missed: Missed,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
    grace: std::time::Duration,
) -> Option<Tick> {
    if due > now {
        return None;
    }
    let latest = cron
        .latest_at_or_before(now)
        .filter(|l| *l >= due)
        .unwrap_or(due);
    let grace = Duration::from_std(grace).unwrap_or(Duration::MAX);
    let on_time = now.signed_duration_since(latest) <= grace;
    let fire = match missed {
        Missed::RunOnce => Some(latest),
        Missed::Skip => on_time.then_some(latest),
    };
    let mut older = 0u32;
    let mut at = due;
    while at < latest && older < 1_000 {
        older += 1;
        match cron.next_after(at) {
            Some(n) => at = n,
            None => break,
        }
    }
    Some(Tick {
        fire,
        next: cron.next_after(now),
        missed: older + u32::from(fire.is_none()),
    })
}

/// One schedule of a template's `schedules:` section, validated: it creates the template's
/// tasks (this version's) on its instants, registered with the template as
/// `namespace/name:schedule` ([`template_schedule_name`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTemplate {
    pub name: String,
    pub cron: String,
    /// An IANA time zone.
    pub tz: String,
    /// The context of every task it creates.
    #[serde(default = "empty_object")]
    pub context: serde_json::Value,
    #[serde(default)]
    pub missed: Missed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::priority::Priority>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// A `schedules:` entry as written (template.rs reads it; its problems are listed with the
/// template's others).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSchedule {
    name: String,
    cron: String,
    #[serde(default)]
    tz: Option<String>,
    #[serde(default)]
    context: Option<serde_json::Value>,
    #[serde(default)]
    missed: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
}

impl RawSchedule {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The schedule, or its problems as (location under `at`, message). The context must be
    /// an object that `context_schema` accepts, as a submitted task's.
    pub(crate) fn resolve(
        self,
        at: &str,
        context_schema: Option<&serde_json::Value>,
    ) -> Result<ScheduleTemplate, Vec<(String, String)>> {
        let mut problems = Vec::new();
        if let Err(e) = check_name(&self.name) {
            problems.push((format!("{at}.name"), e.to_string()));
        }
        let tz = self.tz.unwrap_or_else(|| "UTC".to_owned());
        if let Err(e) = Cron::new(&self.cron, &tz) {
            problems.push((format!("{at}.{}", e.field()), e.to_string()));
        }
        let missed = match self.missed.as_deref().map(str::parse::<Missed>).transpose() {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => {
                problems.push((format!("{at}.missed"), e.to_string()));
                Missed::Skip
            }
        };
        let priority = match self.priority {
            None => None,
            Some(p) => match crate::priority::Priority::new(p) {
                Some(p) => Some(p),
                None => {
                    problems.push((
                        format!("{at}.priority"),
                        format!("{p} is not from 1 (lowest) to 5 (highest)"),
                    ));
                    None
                }
            },
        };
        let context = self.context.unwrap_or_else(empty_object);
        if !context.is_object() {
            problems.push((format!("{at}.context"), "is not an object".to_owned()));
        } else if let Some(schema) = context_schema
            && let Ok(v) = jsonschema::validator_for(schema)
        {
            let errors: Vec<String> = v.iter_errors(&context).map(|e| e.to_string()).collect();
            if !errors.is_empty() {
                problems.push((
                    format!("{at}.context"),
                    format!("does not match the context schema: {}", errors.join("; ")),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ScheduleTemplate {
            name: self.name,
            cron: self.cron,
            tz,
            context,
            missed,
            priority,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn bad_patterns_and_zones_name_their_field() {
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "0 25 * * *",
            "x * * * *",
        ] {
            let e = Cron::new(bad, "UTC").unwrap_err();
            assert_eq!(e.field(), "cron", "{bad}: {e}");
        }
        let e = Cron::new("0 0 30 2 *", "UTC").unwrap_err();
        assert_eq!(
            e,
            ScheduleError::Never {
                cron: "0 0 30 2 *".into()
            }
        );
        let e = Cron::new("0 * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(e.field(), "tz");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        assert_eq!("never".parse::<Missed>().unwrap_err().field(), "missed");
        assert_eq!("run_once".parse::<Missed>().unwrap(), Missed::RunOnce);
        assert!(check_name("hourly-report.v2").is_ok());
        for bad in ["", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert_eq!(check_name(bad).unwrap_err().field(), "name", "{bad}");
        }
    }

    #[test]
    fn instants_follow_the_zone() {
        let c = Cron::new("0 * * * *", "UTC").unwrap();
        assert_eq!(
            c.next_after(utc("2026-12-07T10:00:00Z")),
            Some(utc("2026-12-07T11:00:00Z"))
        );
        assert_eq!(
            c.next_after(utc("2026-12-07T10:59:59.999999Z")),
            Some(utc("2026-12-07T11:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(utc("2026-12-07T10:00:00Z")),
            Some(utc("2026-12-07T10:00:00Z"))
        );
        assert_eq!(
            c.latest_at_or_before(utc("2026-12-07T10:59:00Z")),
            Some(utc("2026-12-07T10:00:00Z"))
        );
        // 09:00 in Paris is 08:00 UTC in winter, 07:00 in summer.
        let paris = Cron::new("0 9 * * MON-FRI", "Europe/Paris").unwrap();
        assert_eq!(
            paris.next_after(utc("2026-12-07T00:00:00Z")),
            Some(utc("2026-12-07T08:00:00Z"))
        );
        assert_eq!(
            paris.next_after(utc("2026-07-03T12:00:00Z")),
            Some(utc("2026-07-06T07:00:00Z"))
        );
        assert_eq!(paris.tz(), "Europe/Paris");
        assert_eq!(
            identity_key("hourly", utc("2026-12-07T10:00:00Z")),
            "schedule:hourly:2026-12-07T10:00:00Z"
        );
    }

    /// 2026-03-29 in Europe/Paris: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    #[test]
    fn a_skipped_time_fires_at_the_end_of_the_gap() {
        let c = Cron::new("30 2 * * *", "Europe/Paris").unwrap();
        let days = c.upcoming(utc("2026-03-27T12:00:00Z"), 4);
        assert_eq!(
            days,
            vec![
                utc("2026-03-28T01:30:00Z"), // 02:30 CET
                utc("2026-03-29T01:00:00Z"), // no 02:30: 03:00 CEST
                utc("2026-03-30T00:30:00Z"), // 02:30 CEST
                utc("2026-03-31T00:30:00Z"),
            ]
        );
        // Every quarter hour: the skipped 02:00-02:45 and the real 03:00 are one instant.
        let q = Cron::new("*/15 * * * *", "Europe/Paris").unwrap();
        let around = q.upcoming(utc("2026-03-29T00:30:00Z"), 4);
        assert_eq!(
            around,
            vec![
                utc("2026-03-29T00:45:00Z"), // 01:45 CET
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST (and the skipped 02:xx)
                utc("2026-03-29T01:15:00Z"),
                utc("2026-03-29T01:30:00Z"),
            ]
        );
        assert_eq!(
            q.latest_at_or_before(utc("2026-03-29T01:05:00Z")),
            Some(utc("2026-03-29T01:00:00Z"))
        );
    }

    /// 2026-10-25 in Europe/Paris: 03:00 CEST becomes 02:00 CET, 02:00-02:59 happens twice.
    #[test]
    fn a_repeated_time_fires_once_at_its_first_occurrence() {
        let c = Cron::new("30 2 * * *", "Europe/Paris").unwrap();
        let days = c.upcoming(utc("2026-10-24T12:00:00Z"), 2);
        assert_eq!(
            days,
            vec![
                utc("2026-10-25T00:30:00Z"), // the first 02:30 (CEST)
                utc("2026-10-26T01:30:00Z"), // 02:30 CET, not the second 02:30 of the 25th
            ]
        );
        // Every half hour: the repeated hour's second pass fires nothing.
        let h = Cron::new("*/30 * * * *", "Europe/Paris").unwrap();
        let around = h.upcoming(utc("2026-10-24T23:45:00Z"), 4);
        assert_eq!(
            around,
            vec![
                utc("2026-10-25T00:00:00Z"), // 02:00 CEST
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST
                utc("2026-10-25T02:00:00Z"), // 03:00 CET (the second 02:xx fires nothing)
                utc("2026-10-25T02:30:00Z"),
            ]
        );
        // During the second pass, the latest instant is the first pass's 02:30.
        assert_eq!(
            h.latest_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            h.next_after(utc("2026-10-25T01:10:00Z")),
            Some(utc("2026-10-25T02:00:00Z"))
        );
    }

    #[test]
    fn a_tick_fires_the_latest_due_instant_by_the_policy() {
        let c = Cron::new("0 * * * *", "UTC").unwrap();
        let due = utc("2026-12-07T10:00:00Z");
        // Not due yet.
        assert_eq!(
            plan(
                &c,
                Missed::Skip,
                due,
                utc("2026-12-07T09:59:59Z"),
                DEFAULT_GRACE
            ),
            None
        );
        // On time (within the grace): both policies fire it.
        for m in [Missed::Skip, Missed::RunOnce] {
            let t = plan(&c, m, due, utc("2026-12-07T10:00:30Z"), DEFAULT_GRACE).unwrap();
            assert_eq!(t.fire, Some(due));
            assert_eq!(t.next, Some(utc("2026-12-07T11:00:00Z")));
            assert_eq!(t.missed, 0);
        }
        // After downtime: 10, 11, 12 and 13 passed; it is 13:20.
        let now = utc("2026-12-07T13:20:00Z");
        let skip = plan(&c, Missed::Skip, due, now, DEFAULT_GRACE).unwrap();
        assert_eq!(skip.fire, None);
        assert_eq!(skip.next, Some(utc("2026-12-07T14:00:00Z")));
        assert_eq!(skip.missed, 4);
        let once = plan(&c, Missed::RunOnce, due, now, DEFAULT_GRACE).unwrap();
        assert_eq!(once.fire, Some(utc("2026-12-07T13:00:00Z")));
        assert_eq!(once.next, Some(utc("2026-12-07T14:00:00Z")));
        assert_eq!(once.missed, 3);
        // Skip still fires the latest when it is on time, dropping only the older ones.
        let t = plan(
            &c,
            Missed::Skip,
            due,
            utc("2026-12-07T13:00:10Z"),
            DEFAULT_GRACE,
        )
        .unwrap();
        assert_eq!(t.fire, Some(utc("2026-12-07T13:00:00Z")));
        assert_eq!(t.missed, 3);
    }

    #[test]
    fn a_templates_schedules_are_validated_with_locations() {
        let yaml = "namespace: t\nname: s\nversion: 1.0.0\n\
            context_schema: {type: object, required: [region]}\n\
            steps: [{name: a, handler: h@1.0.0}]\n\
            schedules:\n\
            \x20 - {name: hourly, cron: '0 * * * *', tz: UTC, context: {region: eu}, missed: run_once, priority: 4}\n\
            \x20 - {name: nightly, cron: '30 2 * * *', tz: Europe/Paris, context: {region: us}}\n";
        let t = crate::template::Template::from_yaml(yaml).unwrap();
        assert_eq!(t.schedules.len(), 2);
        assert_eq!(t.schedules[0].missed, Missed::RunOnce);
        assert_eq!(t.schedules[0].priority.map(|p| p.get()), Some(4));
        assert_eq!(t.schedules[1].missed, Missed::Skip);
        assert_eq!(t.schedules[1].tz, "Europe/Paris");
        // The definition round-trips (it is what the store keeps).
        let back: crate::template::Template =
            serde_json::from_value(serde_json::to_value(&t).unwrap()).unwrap();
        assert_eq!(back, t);

        let bad = "namespace: t\nname: s\nversion: 1.0.0\n\
            context_schema: {type: object, required: [region]}\n\
            steps: [{name: a, handler: h@1.0.0}]\n\
            schedules:\n\
            \x20 - {name: a, cron: '0 * * *', tz: UTC, context: {region: eu}}\n\
            \x20 - {name: b, cron: '0 * * * *', tz: Nowhere/Else, context: {region: eu}}\n\
            \x20 - {name: c, cron: '0 * * * *', missed: later, context: {}}\n\
            \x20 - {name: c, cron: '0 * * * *', context: {region: eu}, priority: 9}\n";
        let e = crate::template::Template::from_yaml(bad).unwrap_err();
        let at: Vec<&str> = e.problems.iter().map(|p| p.location.as_str()).collect();
        assert_eq!(
            at,
            [
                "schedules[0] (a).cron",
                "schedules[1] (b).tz",
                "schedules[2] (c).missed",
                "schedules[2] (c).context",
                "schedules[3] (c).name",
                "schedules[3] (c).priority",
            ],
            "{e}"
        );
        assert!(e.to_string().contains("Nowhere/Else"), "{e}");
    }
}
