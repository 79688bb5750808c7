//! `tasker schedules create | list | pause | resume | delete` (docs/schedules.md): on the
//! store, or with `--server` through the API (`/v1/schedules`). A worker, `serve` or `dev`
//! fires them.

use std::process::ExitCode;

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasker_core::schedule::{Cron, Missed};
use tasker_store::{NewSchedule, ScheduleRow, Store};

use crate::api::{Api, Body};
use crate::app::{App, read_json_arg};

/// What `schedules create` was given.
#[derive(Debug, Clone)]
pub struct ScheduleArgs {
    pub name: String,
    pub cron: String,
    pub tz: String,
    /// `namespace/name@version`.
    pub template: String,
    /// JSON text or `@file`.
    pub context: String,
    pub missed: Missed,
}

impl ScheduleArgs {
    fn to_new(&self) -> Result<NewSchedule> {
        let context = read_json_arg(&self.context, "context")?;
        Ok(
            NewSchedule::new(&self.name, &self.template, &self.cron, &self.tz)
                .with_context(context)
                .with_missed(self.missed),
        )
    }
}

/// One line of `schedules list` (from the store or the API).
struct Line {
    name: String,
    cron: String,
    tz: String,
    template: String,
    missed: String,
    paused: bool,
    next: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    source: String,
}

impl From<&ScheduleRow> for Line {
    fn from(r: &ScheduleRow) -> Self {
        Line {
            name: r.name.clone(),
            cron: r.cron.clone(),
            tz: r.tz.clone(),
            template: r.template_key(),
            missed: r.missed.to_string(),
            paused: r.paused,
            next: r.next_fire_at,
            last: r.last_fired_at,
            source: r.source.as_str().to_owned(),
        }
    }
}

fn instant(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

impl Line {
    fn of_json(v: &Value) -> Line {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Line {
            name: s("name"),
            cron: s("cron"),
            tz: s("tz"),
            template: s("template"),
            missed: s("missed"),
            paused: v["paused"].as_bool().unwrap_or(false),
            next: instant(&v["next_fire_at"]),
            last: instant(&v["last_fired_at"]),
            source: s("source"),
        }
    }

    /// Its next fire time, in UTC and in its zone.
    fn next_text(&self) -> String {
        if self.paused {
            return "paused".into();
        }
        match self.next {
            None => "never".into(),
            Some(t) => match tasker_core::schedule::local_text(&self.tz, t) {
                Some(local) => format!("{} ({local})", t.format("%Y-%m-%dT%H:%M:%SZ")),
                None => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            },
        }
    }
}

fn print(lines: &[Line]) {
    // A table in columns, as `tokens list` prints.
    if lines.is_empty() {
        println!("no schedules");
        return;
    }
    let rows: Vec<[String; 7]> = lines
        .iter()
        .map(|l| {
            [
                l.name.clone(),
                format!("{} {}", l.cron, l.tz),
                l.template.clone(),
                l.missed.clone(),
                l.next_text(),
                l.last
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".into()),
                l.source.clone(),
            ]
        })
        .collect();
    let head = [
        "name",
        "cron",
        "template",
        "missed",
        "next",
        "last fired",
        "source",
    ];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(head.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn said(verb: &str, l: &Line) {
    println!("schedule '{}' {verb}; next: {}", l.name, l.next_text());
}

/// Checks what can be checked before asking the store (the store checks it all again).
fn precheck(a: &ScheduleArgs) -> Result<()> {
    if let Err(e) = Cron::new(&a.cron, &a.tz) {
        bail!("--{}: {e}", if e.field() == "tz" { "tz" } else { "cron" });
    }
    Ok(())
}

impl App {
    /// `tasker schedules create`.
    pub async fn schedules_create(&self, args: &ScheduleArgs) -> Result<ExitCode> {
        precheck(args)?;
        let new = args.to_new()?;
        let store = self.store(2).await?;
        let row = store.create_schedule(&new, Utc::now()).await?;
        said("saved", &Line::from(&row));
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker schedules list`.
    pub async fn schedules_list(&self) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let rows = store.list_schedules().await?;
        print(&rows.iter().map(Line::from).collect::<Vec<_>>());
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker schedules pause` / `resume`.
    pub async fn schedules_pause(&self, name: &str, pause: bool) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let row = if pause {
            store.pause_schedule(name, Utc::now()).await?
        } else {
            store.resume_schedule(name, Utc::now()).await?
        };
        said(if pause { "paused" } else { "resumed" }, &Line::from(&row));
        Ok(ExitCode::SUCCESS)
    }

    /// `tasker schedules delete`.
    pub async fn schedules_delete(&self, name: &str) -> Result<ExitCode> {
        let store = self.store(2).await?;
        if store.delete_schedule(name).await? {
            println!("schedule '{name}' deleted");
            Ok(ExitCode::SUCCESS)
        } else {
            bail!("no schedule named '{name}' (`tasker schedules list` lists them)")
        }
    }
}

/// The API path of a schedule (a template's names hold `/` and `:`: escaped).
fn path_of(name: &str) -> String {
    let mut out = String::from("/v1/schedules/");
    for b in name.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `schedules create --server`.
pub async fn create_remote(api: &Api, args: &ScheduleArgs) -> Result<ExitCode> {
    precheck(args)?;
    let context = read_json_arg(&args.context, "context")?;
    let (_, v) = api
        .post(
            "/v1/schedules",
            Some(Body::Json(json!({
                "name": args.name,
                "cron": args.cron,
                "tz": args.tz,
                "template": args.template,
                "context": context,
                "missed": args.missed,
            }))),
        )
        .await?;
    said("saved", &Line::of_json(&v));
    Ok(ExitCode::SUCCESS)
}

/// `schedules list --server`.
pub async fn list_remote(api: &Api) -> Result<ExitCode> {
    let v = api.get("/v1/schedules").await?;
    let lines: Vec<Line> = v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Line::of_json)
        .collect();
    print(&lines);
    Ok(ExitCode::SUCCESS)
}

/// `schedules pause|resume --server`.
pub async fn pause_remote(api: &Api, name: &str, pause: bool) -> Result<ExitCode> {
    let verb = if pause { "pause" } else { "resume" };
    let (_, v) = api.post(&format!("{}/{verb}", path_of(name)), None).await?;
    said(if pause { "paused" } else { "resumed" }, &Line::of_json(&v));
    Ok(ExitCode::SUCCESS)
}

/// `schedules delete --server`.
pub async fn delete_remote(api: &Api, name: &str) -> Result<ExitCode> {
    api.delete(&path_of(name)).await?;
    println!("schedule '{name}' deleted");
    Ok(ExitCode::SUCCESS)
}
