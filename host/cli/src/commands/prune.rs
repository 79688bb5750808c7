//! `tasker prune`: retention by hand (docs/store.md, "Retention"), and the pruner settings
//! that `tasker worker` and `tasker serve` run with.

use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use tasker_core::retention::{Retention, Span};
use tasker_runtime::PrunerConfig;
use tasker_store::{DEFAULT_PRUNE_BATCH, PruneRequest, Store};

use crate::app::App;

/// A final state `--state` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinalState {
    Complete,
    Cancelled,
    Error,
}

/// What `tasker prune` was asked.
#[derive(Debug, Clone)]
pub struct PruneArgs {
    /// One span for the chosen states, instead of the settings and templates' own.
    pub older_than: Option<Span>,
    /// Only these final states (empty: all three).
    pub states: Vec<FinalState>,
    pub dry_run: bool,
    pub batch: u32,
}

impl PruneArgs {
    /// The store request: `--older-than` for the chosen states (templates' own retention
    /// does not apply: the span given is the rule), else `[retention]` and templates' own;
    /// delivered outbox rows past `[retention] delivered` unless `--state` narrows the run.
    pub fn request(&self, settings: &crate::config::RetentionSettings) -> PruneRequest {
        let all = self.states.is_empty();
        let chosen = |s: FinalState| all || self.states.contains(&s);
        let base = match self.older_than {
            Some(span) => Retention {
                complete: Some(span),
                cancelled: Some(span),
                error: Some(span),
            },
            None => settings.spans,
        };
        PruneRequest {
            retention: Retention {
                complete: base.complete.filter(|_| chosen(FinalState::Complete)),
                cancelled: base.cancelled.filter(|_| chosen(FinalState::Cancelled)),
                error: base.error.filter(|_| chosen(FinalState::Error)),
            },
            template_overrides: self.older_than.is_none(),
            delivered: all.then_some(settings.delivered),
            batch: self.batch,
            dry_run: self.dry_run,
            // By hand, as fast as it goes: the operator asked for it now.
            idle_ratio: 0.0,
        }
    }
}

impl App {
    /// The background pruner of `tasker worker` and `tasker serve` (None: `[retention]
    /// interval = "0s"`).
    pub fn pruner_config(&self) -> Option<PrunerConfig> {
        let r = &self.settings.retention;
        let interval = r.interval?;
        let mut req = PruneRequest::new(r.spans);
        req.delivered = Some(r.delivered);
        Some(PrunerConfig::new(req, interval))
    }

    /// `tasker prune`.
    pub async fn prune(&self, args: &PruneArgs) -> Result<ExitCode> {
        let store = self.store(2).await?;
        let req = args.request(&self.settings.retention);
        let report = store.prune(&req, Utc::now()).await?;
        if report.busy {
            println!(
                "another pruner is running (a worker or server): it removes the rest; \
                 this run stopped after {} batch(es)",
                report.batches.saturating_sub(1)
            );
        }
        let verb = if args.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let r = &req.retention;
        let kept: Vec<String> = [
            ("complete", r.complete),
            ("cancelled", r.cancelled),
            ("error", r.error),
        ]
        .iter()
        .filter_map(|(state, span)| span.map(|s| format!("{state} after {s}")))
        .collect();
        let rules = if kept.is_empty() {
            "no state chosen".to_owned()
        } else if args.older_than.is_some() {
            kept.join(", ")
        } else {
            format!("{}; templates may set their own", kept.join(", "))
        };
        println!("{verb} {} finished tasks ({rules})", report.removed.tasks);
        for (table, rows) in report.removed.tables() {
            println!("  {table:<20} {rows:>10}");
        }
        if args.dry_run {
            println!("dry run: nothing was deleted");
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `--batch`'s default.
pub const PRUNE_BATCH: u32 = DEFAULT_PRUNE_BATCH;
