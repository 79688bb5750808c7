//! Schedules in the store (docs/schedules.md): the rows, the checks both stores make before
//! writing one, and the per-schedule decisions of an upsert and of `fire_due`, written once.
//! The SQL is in `pg_schedules.rs` and `sqlite/schedules.rs`; what a tick fires is
//! `tasker_core::schedule::plan`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tasker_core::priority::Priority;
use tasker_core::schedule::{self, Cron, Missed, ScheduleTemplate};
use tasker_core::template::Template;

use crate::error::StoreError;
use crate::store::Result;
use crate::types::{NewTask, TaskId};

/// Who made a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// `tasker schedules create` or `POST /v1/schedules`.
    Api,
    /// A template's `schedules:` section, registered with the template.
    Template,
}

impl ScheduleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleSource::Api => "api",
            ScheduleSource::Template => "template",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self> {
        match s {
            "api" => Ok(ScheduleSource::Api),
            "template" => Ok(ScheduleSource::Template),
            other => Err(StoreError::decode("schedules.source", other)),
        }
    }
}

/// A schedule to create or replace (by name).
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    pub name: String,
    /// `namespace/name@version` of a registered template.
    pub template_key: String,
    pub cron: String,
    /// An IANA time zone.
    pub tz: String,
    /// The context of every task it creates (an object the template's schema accepts).
    pub context: Value,
    pub missed: Missed,
    /// The tasks' priority (None: the template's).
    pub priority: Option<Priority>,
}

impl NewSchedule {
    pub fn new(
        name: impl Into<String>,
        template_key: impl Into<String>,
        cron: impl Into<String>,
        tz: impl Into<String>,
    ) -> Self {
        NewSchedule {
            name: name.into(),
            template_key: template_key.into(),
            cron: cron.into(),
            tz: tz.into(),
            context: json!({}),
            missed: Missed::Skip,
            priority: None,
        }
    }

    pub fn with_context(mut self, context: Value) -> Self {
        self.context = context;
        self
    }

    pub fn with_missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScheduleRow {
    pub name: String,
    pub namespace: String,
    pub template_name: String,
    pub version: String,
    pub cron: String,
    pub tz: String,
    pub context: Value,
    pub missed: Missed,
    pub priority: Option<Priority>,
    pub paused: bool,
    /// The next instant it fires (None: paused, or the pattern never fires again).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last instant it fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    pub source: ScheduleSource,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl ScheduleRow {
    /// `namespace/name@version`.
    pub fn template_key(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.template_name, self.version)
    }

    /// The pattern (validated when written).
    pub fn cron(&self) -> Result<Cron> {
        Cron::new(&self.cron, &self.tz).map_err(|e| StoreError::decode("schedules.cron", e))
    }
}

/// What one due schedule did in a [`crate::Store::fire_due`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct FiredSchedule {
    pub name: String,
    /// The instant fired (None: every due instant was missed and `skip` dropped them).
    pub instant: Option<DateTime<Utc>>,
    /// The task of the instant (`created` false: another scheduler had created it).
    pub task_id: Option<TaskId>,
    pub created: bool,
    /// Due instants not fired (see `tasker_core::schedule::Tick::missed`).
    pub missed: u32,
    /// Its next instant now.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Why the task could not be created (the instant is passed over all the same, so one
    /// broken schedule does not stop the others).
    pub error: Option<String>,
}

/// One field of a schedule that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleProblem {
    /// `name`, `template`, `cron`, `tz`, `missed`, `priority`, or `context` followed by the
    /// JSON pointer of the value at fault (`context/region`).
    pub field: String,
    pub message: String,
}

/// Every problem of a schedule made by hand, given its template as registered (None: not
/// registered). Both stores refuse a schedule with any, writing nothing; the API reports them
/// as field locations.
pub fn check_schedule(s: &NewSchedule, template: Option<&Template>) -> Vec<ScheduleProblem> {
    let mut out = Vec::new();
    let mut problem = |field: String, message: String| out.push(ScheduleProblem { field, message });
    if let Err(e) = schedule::check_name(&s.name) {
        problem("name".into(), e.to_string());
    }
    if let Err(e) = Cron::new(&s.cron, &s.tz) {
        // A bad zone hides the pattern's own problems: read the pattern in UTC too.
        if e.field() == "tz"
            && let Err(c) = Cron::new(&s.cron, "UTC")
        {
            problem(c.field().into(), c.to_string());
        }
        problem(e.field().into(), e.to_string());
    }
    match template {
        None => problem(
            "template".into(),
            format!("unknown template {}", s.template_key),
        ),
        Some(t) => {
            if !s.context.is_object() {
                problem("context".into(), "is not a JSON object".into());
            } else if let Err(e) = t.validate_context(&s.context) {
                for p in e.errors {
                    let at = if p.location == "/" {
                        "context".to_owned()
                    } else {
                        format!("context{}", p.location)
                    };
                    problem(
                        at,
                        format!(
                            "does not match the context schema of {}: {}",
                            e.template, p.message
                        ),
                    );
                }
            }
        }
    }
    out
}

/// The refusal of a schedule with problems, as one [`StoreError::InvalidInput`] naming each
/// field.
pub(crate) fn refusal(name: &str, problems: &[ScheduleProblem]) -> StoreError {
    let what = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ");
    StoreError::InvalidInput(format!("schedule '{name}': {what}"))
}

/// A schedule as a store writes it: validated, with its parsed pattern.
pub(crate) struct Checked {
    pub name: String,
    pub namespace: String,
    pub template_name: String,
    pub version: String,
    pub cron: Cron,
    pub context: Value,
    pub missed: Missed,
    pub priority: Option<Priority>,
    pub source: ScheduleSource,
}

impl Checked {
    /// A schedule made by hand, checked against its template (as registered, or None).
    pub(crate) fn by_hand(s: &NewSchedule, template: Option<&Template>) -> Result<Checked> {
        let problems = check_schedule(s, template);
        if !problems.is_empty() {
            return Err(refusal(&s.name, &problems));
        }
        let t = template.expect("checked: the template exists");
        let cron = Cron::new(&s.cron, &s.tz).map_err(|e| refusal(&s.name, &[e.into()]))?;
        Ok(Checked {
            name: s.name.clone(),
            namespace: t.namespace.clone(),
            template_name: t.name.clone(),
            version: t.version.to_string(),
            cron,
            context: s.context.clone(),
            missed: s.missed,
            priority: s.priority,
            source: ScheduleSource::Api,
        })
    }

    /// The schedules of a template's `schedules:` section (validated with the template).
    pub(crate) fn of_template(t: &Template) -> Result<Vec<Checked>> {
        t.schedules
            .iter()
            .map(|s: &ScheduleTemplate| {
                let name = schedule::template_schedule_name(&t.namespace, &t.name, &s.name);
                let cron = Cron::new(&s.cron, &s.tz).map_err(|e| refusal(&name, &[e.into()]))?;
                Ok(Checked {
                    name,
                    namespace: t.namespace.clone(),
                    template_name: t.name.clone(),
                    version: t.version.to_string(),
                    cron,
                    context: s.context.clone(),
                    missed: s.missed,
                    priority: s.priority,
                    source: ScheduleSource::Template,
                })
            })
            .collect()
    }

    /// Its stored state after an upsert over `existing` (paused, next instant): a paused
    /// schedule stays paused; one whose pattern and zone did not change keeps its next
    /// instant (so a due instant is not lost to a re-registration); otherwise the next
    /// instant after `now`.
    pub(crate) fn upserted_state(
        &self,
        existing: Option<(&str, &str, bool, Option<DateTime<Utc>>)>,
        now: DateTime<Utc>,
    ) -> (bool, Option<DateTime<Utc>>) {
        match existing {
            Some((_, _, true, _)) => (true, None),
            Some((cron, tz, false, Some(next)))
                if cron == self.cron.pattern() && tz == self.cron.tz() =>
            {
                (false, Some(next))
            }
            _ => (false, self.cron.next_after(now)),
        }
    }
}

impl From<schedule::ScheduleError> for ScheduleProblem {
    fn from(e: schedule::ScheduleError) -> Self {
        ScheduleProblem {
            field: e.field().into(),
            message: e.to_string(),
        }
    }
}

/// The task an instant of schedule `row` fires.
pub(crate) fn task_of(row: &ScheduleRow, instant: DateTime<Utc>) -> NewTask {
    let instant_text = instant.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    NewTask {
        template_key: row.template_key(),
        context: row.context.clone(),
        identity_key: Some(schedule::identity_key(&row.name, instant)),
        metadata: json!({"schedule": row.name, "instant": instant_text}),
        priority: row.priority,
        run_at: None,
    }
}

/// Longest `fire_due` batch.
pub const MAX_FIRE_BATCH: u32 = 1_000;

pub(crate) fn check_fire_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_FIRE_BATCH {
        return Err(StoreError::InvalidInput(format!(
            "fire_due limit {limit} is not from 1 to {MAX_FIRE_BATCH}"
        )));
    }
    Ok(())
}

pub(crate) fn missed_of(s: &str) -> Result<Missed> {
    s.parse()
        .map_err(|e: schedule::ScheduleError| StoreError::decode("schedules.missed", e))
}

pub(crate) fn priority_of(p: Option<i64>) -> Result<Option<Priority>> {
    p.map(|p| Priority::new(p).ok_or_else(|| StoreError::decode("schedules.priority", p)))
        .transpose()
}

pub(crate) fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("schedule '{name}'"))
}
