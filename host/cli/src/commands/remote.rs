//! The commands that `--server URL` sends through a `tasker serve` instead of the database:
//! submit, status, tasks list, cancel, retry, resolve, templates, plugins.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::api::{Api, Body};
use crate::app::{Start, load_template, read_json_arg};
use crate::commands::{Graph, TaskListArgs};
use crate::report;

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => report::guest_text(s, 200),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// An RFC 3339 instant as the local commands print it.
fn instant(v: &Value) -> String {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| text(v))
}

/// A template file is registered (as JSON, its grants as written: the workers resolve
/// relative ones against their grants base); anything else is taken for a registered key.
async fn template_key(api: &Api, template: &str, allow_missing: bool) -> Result<String> {
    let path = Path::new(template);
    if !path.is_file() {
        return Ok(template.to_owned());
    }
    let t = load_template(path)?;
    post_template(api, &t, allow_missing).await?;
    Ok(t.key())
}

/// `POST /v1/templates` (the server checks its components against its plugin directory);
/// the warnings of a registration ahead of a deploy go to stderr.
async fn post_template(
    api: &Api,
    t: &tasker_core::template::Template,
    allow_missing: bool,
) -> Result<(StatusCode, Value)> {
    let path = if allow_missing {
        "/v1/templates?allow_missing_handlers=true"
    } else {
        "/v1/templates"
    };
    let (status, out) = api
        .post(path, Some(Body::Json(serde_json::to_value(t)?)))
        .await?;
    for w in out["warnings"].as_array().into_iter().flatten() {
        eprintln!(
            "warning: {}",
            report::guest_text(w.as_str().unwrap_or_default(), 4000)
        );
    }
    Ok((status, out))
}

pub async fn submit(
    api: &Api,
    template: &str,
    context: &str,
    start: Start,
    wait: bool,
    allow_missing: bool,
) -> Result<ExitCode> {
    let key = template_key(api, template, allow_missing).await?;
    let context = read_json_arg(context, "context")?;
    let mut body = json!({
        "template": key, "context": context, "identity_key": start.identity_key,
    });
    if let Some(p) = start.priority {
        body["priority"] = json!(p.get());
    }
    if let Some(at) = start.run_at {
        body["run_at"] = json!(at);
    }
    let (status, task) = api.post("/v1/tasks", Some(Body::Json(body))).await?;
    let id = task["id"]
        .as_i64()
        .context("the server answered no task id")?;
    if status == StatusCode::OK {
        eprintln!("task {id} already exists for this identity key");
    }
    println!("{id}");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    // Live progress from the task's event stream, as `run` shows it.
    let t = api.get(&format!("/v1/tasks/{id}")).await?;
    let names: Vec<String> = t["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect();
    let bus = tasker_engine::EventBus::default();
    let task_id = tasker_store::TaskId::new(id);
    let progress = crate::progress::Progress::start(&bus, task_id, &names, false);
    let followed = follow_events(api, id, &bus).await;
    progress.finish().await;
    followed?;
    // The stream ends with the task, or with the server: the state decides.
    let state = loop {
        let t = api.get(&format!("/v1/tasks/{id}")).await?;
        let state = t["state"].as_str().unwrap_or("").to_owned();
        if matches!(state.as_str(), "complete" | "error" | "cancelled") {
            break state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    status_of(api, id).await?;
    Ok(if state == "complete" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Publishes the task's events from `GET /v1/tasks/{id}/events` on `bus` until the stream
/// ends (it ends with the task).
async fn follow_events(api: &Api, id: i64, bus: &tasker_engine::EventBus) -> Result<()> {
    let mut stream = api.events(&format!("/v1/tasks/{id}/events")).await?;
    while let Some((cursor, d)) = stream.next().await? {
        let e = tasker_store::StoredEvent {
            cursor,
            task_id: tasker_store::TaskId::new(d["task_id"].as_i64().unwrap_or(id)),
            step_id: d["step_id"].as_i64().map(tasker_store::StepId::new),
            step_name: d["step_name"].as_str().map(str::to_owned),
            name: d["name"].as_str().unwrap_or_default().to_owned(),
            from_state: d["from_state"].as_str().map(str::to_owned),
            to_state: d["to_state"].as_str().map(str::to_owned),
            attempt: d["attempt"].as_i64().and_then(|a| i32::try_from(a).ok()),
            payload: d["payload"].clone(),
            at: serde_json::from_value(d["at"].clone()).context("an event without its instant")?,
        };
        let failure = |step: tasker_store::StepId, attempt: i32| async move {
            let s = api.get(&format!("/v1/steps/{step}")).await?;
            Ok(s["attempt_history"]
                .as_array()
                .into_iter()
                .flatten()
                .rev()
                .find(|a| a["attempt"].as_i64() == Some(i64::from(attempt)))
                .map(|a| crate::progress::FailureInfo {
                    message: a["message"].as_str().unwrap_or_default().to_owned(),
                    kind: a["error_kind"].as_str().map(str::to_owned),
                    next_ready_at: a.get("next_ready_at").cloned(),
                    exhausted: a["decision"] == "exhausted",
                }))
        };
        for ev in crate::progress::translate(&e, failure).await? {
            bus.publish(ev);
        }
    }
    Ok(())
}

/// `tasker status` through the API: the steps and why each unrun one is not ready.
pub async fn status_of(api: &Api, id: i64) -> Result<()> {
    let t = api.get(&format!("/v1/tasks/{id}")).await?;
    println!(
        "task {id} ({}): {}, created {}",
        text(&t["template"]),
        text(&t["state"]),
        instant(&t["created_at"])
    );
    if let Some(e) = t.get("execution").filter(|e| !e.is_null()) {
        println!(
            "  {}; {:.0}% complete; next: {}; health: {}",
            text(&e["execution_status"]),
            e["completion_percentage"].as_f64().unwrap_or(0.0),
            text(&e["recommended_action"]),
            text(&e["health_status"])
        );
    }
    let rows: Vec<Vec<String>> = t["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["id"]),
                text(&s["name"]),
                text(&s["state"]),
                format!("{}/{}", s["attempts"], s["max_attempts"]),
                s["readiness"]["reason"].as_str().unwrap_or("").to_owned(),
                text(&s["last_error_kind"]),
            ]
        })
        .collect();
    report::print_rows(
        &[
            "id",
            "step",
            "state",
            "attempts",
            "why not run",
            "last error kind",
        ],
        rows,
    );
    Ok(())
}

pub async fn tasks_list(api: &Api, args: &TaskListArgs) -> Result<ExitCode> {
    let mut q = vec![format!("limit={}", args.limit)];
    if !args.states.is_empty() {
        let s: Vec<String> = args.states.iter().map(|s| s.to_string()).collect();
        q.push(format!("state={}", s.join(",")));
    }
    for (k, v) in [
        ("template", &args.template),
        ("tag", &args.tag),
        ("identity_key", &args.identity_key),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(v)));
        }
    }
    if let Some(c) = args.cursor {
        q.push(format!("cursor={c}"));
    }
    let page = api.get(&format!("/v1/tasks?{}", q.join("&"))).await?;
    let rows: Vec<Vec<String>> = page["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let total = t["step_count"].as_i64().unwrap_or(0);
            let open = t["unfinished_steps"].as_i64().unwrap_or(0);
            vec![
                text(&t["id"]),
                text(&t["template"]),
                text(&t["state"]),
                format!("{}/{total}", total - open),
                instant(&t["created_at"]),
                instant(&t["finished_at"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no tasks match");
    } else {
        report::print_rows(
            &["task", "template", "state", "steps", "created", "finished"],
            rows,
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        eprintln!("more: add --cursor {next}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn cancel(api: &Api, task: i64) -> Result<ExitCode> {
    let (_, out) = api.post(&format!("/v1/tasks/{task}/cancel"), None).await?;
    if out["cancelled"] == true {
        println!("task {task} cancelled ({} steps)", out["steps_cancelled"]);
    } else {
        println!("task {task} was already cancelled");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn retry(api: &Api, task: i64) -> Result<ExitCode> {
    let (_, out) = api.post(&format!("/v1/tasks/{task}/retry"), None).await?;
    println!("task {task}: {} steps reset", out["steps_reset"]);
    Ok(ExitCode::SUCCESS)
}

pub async fn resolve(api: &Api, step: i64, result: Option<&str>) -> Result<ExitCode> {
    let result = result.map(|r| read_json_arg(r, "result")).transpose()?;
    let (_, out) = api
        .post(
            &format!("/v1/steps/{step}/resolve"),
            Some(Body::Json(json!({ "result": result }))),
        )
        .await?;
    println!(
        "step {step} resolved; task {} is {}",
        out["task_id"],
        text(&out["task_state"])
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn templates_register(api: &Api, file: &Path, allow_missing: bool) -> Result<ExitCode> {
    let t = load_template(file)?;
    let (status, out) = post_template(api, &t, allow_missing).await?;
    println!(
        "{} {} ({} steps)",
        if status == StatusCode::CREATED {
            "registered"
        } else {
            "already registered"
        },
        text(&out["key"]),
        t.steps.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn templates_list(api: &Api) -> Result<ExitCode> {
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/templates?limit=500&cursor={}", encode(c)),
            None => "/v1/templates?limit=500".to_owned(),
        };
        let page = api.get(&path).await?;
        for t in page["items"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(&t["key"]),
                text(&t["step_count"]),
                t["description"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    report::print_rows(&["template", "steps", "description"], rows);
    Ok(ExitCode::SUCCESS)
}

pub async fn plugins_list(api: &Api) -> Result<ExitCode> {
    let all = api.get("/v1/plugins").await?;
    let rows = all
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                text(&p["hash"]).chars().take(19).collect(),
                format!("{}@{}", text(&p["name"]), text(&p["version"])),
                text(&p["world"]),
                text(&p["size_bytes"]),
            ]
        })
        .collect();
    report::print_rows(&["hash", "plugin", "world", "bytes"], rows);
    Ok(ExitCode::SUCCESS)
}

/// `templates show KEY --server`: the registered definition, printed as locally.
pub async fn templates_show(api: &Api, key: &str, graph: Option<Graph>) -> Result<ExitCode> {
    let (ns_name, version) = key
        .rsplit_once('@')
        .with_context(|| format!("'{key}' is not a template key namespace/name@version"))?;
    let (ns, name) = ns_name
        .split_once('/')
        .with_context(|| format!("'{key}' is not a template key namespace/name@version"))?;
    let path = format!(
        "/v1/templates/{}/{}/{}",
        encode(ns),
        encode(name),
        encode(version)
    );
    let detail = api.get(&path).await?;
    let t: tasker_core::template::Template =
        serde_json::from_value(detail["definition"].clone())
            .context("the server's template definition does not read as a template")?;
    crate::commands::show_template(&t, graph)
}

/// `plugins inspect X --server`.
pub async fn plugins_inspect(api: &Api, plugin: &str) -> Result<ExitCode> {
    let p = api.get(&format!("/v1/plugins/{}", encode(plugin))).await?;
    let rows = [
        (
            "plugin",
            format!("{}@{}", text(&p["name"]), text(&p["version"])),
        ),
        ("hash", text(&p["hash"])),
        ("world", text(&p["world"])),
        ("bytes", text(&p["size_bytes"])),
        ("file", text(&p["file"])),
        ("loaded", text(&p["loaded"])),
        ("found", instant(&p["found_at"])),
    ];
    for (k, v) in rows {
        println!("{k:<7} {v}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `plugins upload FILE --server`.
pub async fn plugins_upload(
    api: &Api,
    name: &str,
    version: &str,
    bytes: Vec<u8>,
) -> Result<ExitCode> {
    let path = format!(
        "/v1/plugins?name={}&version={}",
        encode(name),
        encode(version)
    );
    let (status, p) = api.post(&path, Some(Body::Wasm(bytes))).await?;
    let hex = text(&p["hash"]);
    let hex = hex.strip_prefix("blake3:").unwrap_or(&hex);
    println!(
        "{}",
        crate::commands::uploaded(
            status == StatusCode::CREATED,
            &text(&p["name"]),
            &text(&p["version"]),
            hex
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// The server's hooks, by id.
async fn hook_names(api: &Api) -> Result<Vec<crate::hooks::HookName>> {
    let all = api.get("/v1/hooks").await?;
    let mut hooks: Vec<crate::hooks::HookName> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            Some(crate::hooks::HookName {
                id: h["hook_id"].as_i64()?,
                component: h["component"].as_str()?.to_owned(),
            })
        })
        .collect();
    hooks.sort_by_key(|h| h.id);
    Ok(hooks)
}

/// The dead letters of these hooks, every page.
async fn dead_letters_of(
    api: &Api,
    hooks: &[crate::hooks::HookName],
) -> Result<Vec<crate::hooks::DeadLetter>> {
    let mut rows = Vec::new();
    for h in hooks {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/hooks/{}/deliveries?state=dead&limit=500", h.id);
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", encode(c)));
            }
            let page = api.get(&path).await?;
            for d in page["items"].as_array().into_iter().flatten() {
                rows.push(crate::hooks::DeadLetter {
                    id: d["id"].as_i64().unwrap_or_default(),
                    hook_id: h.id,
                    hook: h.component.clone(),
                    event: text(&d["event"]),
                    task: text(&d["task_id"]),
                    step: d["step_name"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| d["step_id"].as_i64().map(|s| s.to_string())),
                    attempts: d["attempts"].as_i64().unwrap_or_default(),
                    last_error: d["last_error"].as_str().unwrap_or_default().to_owned(),
                    when: if d["finished_at"].is_null() {
                        instant(&d["next_attempt_at"])
                    } else {
                        instant(&d["finished_at"])
                    },
                });
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
    rows.sort_by_key(|d| d.id);
    Ok(rows)
}

/// `hooks dead-letters --server`.
pub async fn hooks_dead_letters(api: &Api, hook: Option<&str>) -> Result<ExitCode> {
    let hooks = crate::hooks::select_hooks(hook_names(api).await?, hook)?;
    crate::hooks::print_dead_letters(dead_letters_of(api, &hooks).await?);
    Ok(ExitCode::SUCCESS)
}

/// `hooks redeliver --server`: the API redelivers per hook, so ids are grouped by the hook
/// whose dead letters they are; an id that is none of them is refused before anything is
/// sent.
pub async fn hooks_redeliver(
    api: &Api,
    hook: Option<&str>,
    ids: &[i64],
    all: bool,
) -> Result<ExitCode> {
    let hooks = crate::hooks::select_hooks(hook_names(api).await?, hook)?;
    let mut batches: Vec<(i64, Option<Vec<i64>>)> = Vec::new();
    if all {
        batches.extend(hooks.iter().map(|h| (h.id, None)));
    } else {
        let dead = dead_letters_of(api, &hooks).await?;
        for id in ids {
            let Some(d) = dead.iter().find(|d| d.id == *id) else {
                anyhow::bail!(
                    "{id} is not a dead letter{}: `tasker hooks dead-letters` lists them",
                    hook.map(|h| format!(" of hook {h}")).unwrap_or_default()
                );
            };
            let hook_id = d.hook_id;
            match batches.iter_mut().find(|(h, _)| *h == hook_id) {
                Some((_, Some(v))) => v.push(*id),
                _ => batches.push((hook_id, Some(vec![*id]))),
            }
        }
    }
    let mut rows = Vec::new();
    for (hook_id, ids) in batches {
        let (_, out) = api
            .post(
                &format!("/v1/hooks/{hook_id}/redeliver"),
                Some(Body::Json(json!({ "ids": ids }))),
            )
            .await?;
        for r in out.as_array().into_iter().flatten() {
            rows.push((
                r["old_id"].as_i64().unwrap_or_default(),
                r["new_id"].as_i64().unwrap_or_default(),
                text(&r["task_id"]),
            ));
        }
    }
    crate::hooks::print_redelivered(&rows);
    Ok(ExitCode::SUCCESS)
}
