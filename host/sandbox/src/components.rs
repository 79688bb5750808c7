//! Whether a plugin directory provides every component a template runs (step handlers,
//! hooks, retry policies, each in its world). The CLI and the API check it when a template
//! is registered and when a task is submitted, so an unknown `name@version` is refused with
//! what the directory offers instead of burning the step's attempts later.

use std::fmt;

use tasker_core::template::{HandlerRef, Template};

use crate::registry::{PluginRef, Registry, World};

/// One component a template names that the directory cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingComponent {
    /// Where the template names it: `steps[1] (b).handler`, `hooks[0].component`,
    /// `retry_policy`.
    pub at: String,
    /// The reference as written (`name@version` or `blake3:<hex>`).
    pub reference: String,
    /// Why it cannot run: not found (with the versions of that name there are), a component
    /// of another world, a refused file.
    pub why: String,
}

/// The components of a template that a plugin directory lacks, and what it offers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MissingComponents {
    /// `namespace/name@version`.
    pub template: String,
    pub missing: Vec<MissingComponent>,
    /// Every active plugin as `name@version (world)`, the closest to a missing name first
    /// (the same name in other versions, then names by edit distance).
    pub available: Vec<String>,
}

/// How many of the available plugins [`MissingComponents`]' text lists.
const LISTED: usize = 12;

impl fmt::Display for MissingComponents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "template {} names components that the plugin directory does not provide:",
            self.template
        )?;
        for m in &self.missing {
            write!(f, "\n  {}: {}: {}", m.at, m.reference, m.why)?;
        }
        if self.available.is_empty() {
            return f.write_str("\nthe plugin directory holds no plugins");
        }
        write!(f, "\navailable (closest first): ")?;
        f.write_str(&self.available[..self.available.len().min(LISTED)].join(", "))?;
        if self.available.len() > LISTED {
            write!(
                f,
                ", and {} more (tasker plugins list)",
                self.available.len() - LISTED
            )?;
        }
        Ok(())
    }
}

/// Every component `t` runs, with where it is named and the world it must export.
fn wanted(t: &Template) -> Vec<(String, &HandlerRef, World)> {
    let mut out = Vec::new();
    for (i, s) in t.steps.iter().enumerate() {
        out.push((
            format!("steps[{i}] ({}).handler", s.name),
            &s.handler,
            World::StepHandler,
        ));
        if let Some(p) = &s.retry_policy {
            out.push((
                format!("steps[{i}] ({}).retry_policy", s.name),
                p,
                World::RetryPolicy,
            ));
        }
    }
    for (i, h) in t.hooks.iter().enumerate() {
        out.push((
            format!("hooks[{i}].component"),
            &h.component,
            World::EventHook,
        ));
    }
    if let Some(p) = &t.retry_policy {
        out.push(("retry_policy".into(), p, World::RetryPolicy));
    }
    out
}

/// Checks that `registry` resolves every component of `t` to one of the right world. Reads
/// the registry's table only: nothing is compiled.
pub fn check_components(registry: &Registry, t: &Template) -> Result<(), MissingComponents> {
    let plugins = registry.plugins();
    let mut missing = Vec::new();
    let mut missing_names: Vec<&str> = Vec::new();
    for (at, r, world) in wanted(t) {
        let pref = match r {
            HandlerRef::Named { name, version } => PluginRef::Name {
                name: name.clone(),
                version: Some(version.clone()),
            },
            HandlerRef::Hash(h) => match format!("blake3:{h}").parse() {
                Ok(p) => p,
                Err(e) => {
                    missing.push(MissingComponent {
                        at,
                        reference: r.to_string(),
                        why: e,
                    });
                    continue;
                }
            },
        };
        let why = match registry.resolve(&pref) {
            Ok(p) if p.world() == world => continue,
            Ok(p) => format!("exports the {} world, not {world}", p.world()),
            Err(e) => match r {
                HandlerRef::Named { name, .. } => {
                    missing_names.push(name);
                    let mut others: Vec<&str> = plugins
                        .iter()
                        .filter(|p| &p.name == name)
                        .map(|p| p.version.as_str())
                        .collect();
                    others.sort_unstable();
                    if others.is_empty() {
                        // Not found, or its file was refused: the registry's words name it.
                        e.to_string()
                    } else {
                        format!(
                            "no such version; the directory has {name} {}",
                            others.join(", ")
                        )
                    }
                }
                HandlerRef::Hash(_) => e.to_string(),
            },
        };
        missing.push(MissingComponent {
            at,
            reference: r.to_string(),
            why,
        });
    }
    if missing.is_empty() {
        return Ok(());
    }
    let mut ranked: Vec<(usize, String, String, &str)> = plugins
        .iter()
        .map(|p| {
            let d = missing_names
                .iter()
                .map(|n| edit_distance(n, &p.name))
                .min()
                .unwrap_or(0);
            (d, p.name.clone(), p.version.clone(), p.world().as_str())
        })
        .collect();
    ranked.sort();
    ranked.dedup();
    Err(MissingComponents {
        template: t.key(),
        missing,
        available: ranked
            .into_iter()
            .map(|(_, n, v, w)| format!("{n}@{v} ({w})"))
            .collect(),
    })
}

/// Levenshtein distance over chars: how far a plugin name is from the one asked for.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(row[j] + 1).min(up + 1);
            diag = up;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_char_edits() {
        assert_eq!(edit_distance("echo", "echo"), 0);
        assert_eq!(edit_distance("ecko", "echo"), 1);
        assert_eq!(edit_distance("echo", "echoes"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn the_text_names_each_missing_component_and_bounds_the_list() {
        let m = MissingComponents {
            template: "t/x@1.0.0".into(),
            missing: vec![MissingComponent {
                at: "steps[0] (a).handler".into(),
                reference: "nope@1.0.0".into(),
                why: "not there".into(),
            }],
            available: (0..20)
                .map(|i| format!("p{i}@0.1.0 (step-handler)"))
                .collect(),
        };
        let text = m.to_string();
        assert!(
            text.contains("steps[0] (a).handler: nope@1.0.0: not there"),
            "{text}"
        );
        assert!(
            text.contains("p11@0.1.0 (step-handler), and 8 more"),
            "{text}"
        );
        assert!(!text.contains("p12@"), "{text}");
    }
}
