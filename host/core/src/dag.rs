//! The step graph of a template: checked once, then indexed.

use std::collections::HashMap;

use thiserror::Error;

/// Why a set of steps is not a DAG.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DagError {
    #[error("the template has no steps")]
    Empty,
    #[error("step '{name}' is defined more than once")]
    DuplicateStep { name: String },
    #[error("step '{step}' depends on unknown step '{dependency}'")]
    UnknownDependency { step: String, dependency: String },
    #[error("step '{step}' lists dependency '{dependency}' more than once")]
    DuplicateDependency { step: String, dependency: String },
    #[error("dependency cycle: {}", path.join(" -> "))]
    Cycle {
        /// The cycle, starting and ending at the same step.
        path: Vec<String>,
    },
}

/// A validated DAG over step indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dag {
    names: Vec<String>,
    parents: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
    order: Vec<usize>,
}

impl Dag {
    /// Builds the graph from `(step name, its dependencies)` in declaration order.
    pub fn build<'a, I, D>(steps: I) -> Result<Dag, DagError>
    where
        I: IntoIterator<Item = (&'a str, D)>,
        D: IntoIterator<Item = &'a str>,
    {
        let steps: Vec<(&str, Vec<&str>)> = steps
            .into_iter()
            .map(|(n, d)| (n, d.into_iter().collect()))
            .collect();
        if steps.is_empty() {
            return Err(DagError::Empty);
        }
        let mut index = HashMap::with_capacity(steps.len());
        for (i, (name, _)) in steps.iter().enumerate() {
            if index.insert(*name, i).is_some() {
                return Err(DagError::DuplicateStep {
                    name: (*name).to_owned(),
                });
            }
        }
        let n = steps.len();
        let mut parents = vec![Vec::new(); n];
        let mut children = vec![Vec::new(); n];
        for (i, (name, deps)) in steps.iter().enumerate() {
            for dep in deps {
                let p = *index.get(dep).ok_or_else(|| DagError::UnknownDependency {
                    step: (*name).to_owned(),
                    dependency: (*dep).to_owned(),
                })?;
                if parents[i].contains(&p) {
                    return Err(DagError::DuplicateDependency {
                        step: (*name).to_owned(),
                        dependency: (*dep).to_owned(),
                    });
                }
                parents[i].push(p);
                children[p].push(i);
            }
        }
        let names = steps.iter().map(|(n, _)| (*n).to_owned()).collect();
        let mut dag = Dag {
            names,
            parents,
            children,
            order: Vec::new(),
        };
        dag.order = dag.topological_order()?;
        Ok(dag)
    }

    /// Kahn's algorithm, stable in declaration order; on failure, finds one cycle to print.
    fn topological_order(&self) -> Result<Vec<usize>, DagError> {
        let n = self.names.len();
        let mut indegree: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut ready: std::collections::VecDeque<usize> =
            (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop_front() {
            order.push(i);
            for &c in &self.children[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push_back(c);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        // Every node left has a parent left, so walking parents must revisit a node.
        let start = (0..n)
            .find(|&i| indegree[i] > 0)
            .expect("a node in a cycle");
        let mut seen_at = HashMap::new();
        let mut walk = Vec::new();
        let mut cur = start;
        while !seen_at.contains_key(&cur) {
            seen_at.insert(cur, walk.len());
            walk.push(cur);
            cur = *self.parents[cur]
                .iter()
                .find(|&&p| indegree[p] > 0)
                .expect("a remaining parent");
        }
        // `walk` follows parent edges; reverse it so the path reads in dependency order.
        let mut cycle: Vec<usize> = walk[seen_at[&cur]..].to_vec();
        cycle.reverse();
        cycle.push(cycle[0]);
        Err(DagError::Cycle {
            path: cycle.into_iter().map(|i| self.names[i].clone()).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn parents(&self, i: usize) -> &[usize] {
        &self.parents[i]
    }

    pub fn children(&self, i: usize) -> &[usize] {
        &self.children[i]
    }

    /// Step indices with every parent before its children.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// The longest path from a root to each step (roots are level 0).
    pub fn levels(&self) -> Vec<u32> {
        let mut level = vec![0u32; self.len()];
        for &i in &self.order {
            for &p in &self.parents[i] {
                level[i] = level[i].max(level[p] + 1);
            }
        }
        level
    }

    /// The graph as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (i, name) in self.names.iter().enumerate() {
            out.push_str(&format!("    s{i}[\"{}\"]\n", name.replace('"', "'")));
        }
        for &i in &self.order {
            for &c in &self.children[i] {
                out.push_str(&format!("    s{i} --> s{c}\n"));
            }
        }
        out
    }

    /// The graph in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph tasker {\n    rankdir=TB;\n");
        for name in &self.names {
            out.push_str(&format!("    \"{}\";\n", name.replace('"', "\\\"")));
        }
        for &i in &self.order {
            for &c in &self.children[i] {
                out.push_str(&format!(
                    "    \"{}\" -> \"{}\";\n",
                    self.names[i].replace('"', "\\\""),
                    self.names[c].replace('"', "\\\"")
                ));
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(spec: &[(&'static str, &[&'static str])]) -> Result<Dag, DagError> {
        Dag::build(spec.iter().map(|(n, d)| (*n, d.iter().copied())))
    }

    #[test]
    fn diamond_levels_and_order() {
        let d = dag(&[
            ("ship", &["reserve", "charge"]),
            ("validate", &[]),
            ("reserve", &["validate"]),
            ("charge", &["validate"]),
        ])
        .unwrap();
        let order: Vec<&str> = d.order().iter().map(|&i| d.name(i)).collect();
        assert_eq!(order, vec!["validate", "reserve", "charge", "ship"]);
        let levels = d.levels();
        assert_eq!(levels[d.index("ship").unwrap()], 2);
        assert_eq!(levels[d.index("validate").unwrap()], 0);
    }

    #[test]
    fn longest_path_wins() {
        let d = dag(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &["a", "c"])]).unwrap();
        assert_eq!(d.levels(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn cycle_is_printed() {
        let err = dag(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"]), ("x", &[])]).unwrap_err();
        let DagError::Cycle { path } = &err else {
            panic!("{err}")
        };
        assert_eq!(path.first(), path.last());
        assert_eq!(path.len(), 4);
        let msg = err.to_string();
        assert!(msg.starts_with("dependency cycle: "), "{msg}");
        for s in ["a", "b", "c"] {
            assert!(path.iter().any(|p| p == s), "{msg}");
        }
        // Each arrow follows a real dependency edge: parent -> child.
        let d = |s: &str| match s {
            "a" => "c",
            "b" => "a",
            "c" => "b",
            _ => unreachable!(),
        };
        for w in path.windows(2) {
            assert_eq!(d(&w[1]), w[0], "{msg}");
        }
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = dag(&[("a", &["a"])]).unwrap_err();
        assert_eq!(err.to_string(), "dependency cycle: a -> a");
    }

    #[test]
    fn structural_errors() {
        assert_eq!(dag(&[]).unwrap_err(), DagError::Empty);
        assert_eq!(
            dag(&[("a", &[]), ("a", &[])]).unwrap_err().to_string(),
            "step 'a' is defined more than once"
        );
        assert_eq!(
            dag(&[("a", &["zz"])]).unwrap_err().to_string(),
            "step 'a' depends on unknown step 'zz'"
        );
        assert!(matches!(
            dag(&[("a", &[]), ("b", &["a", "a"])]).unwrap_err(),
            DagError::DuplicateDependency { .. }
        ));
    }

    #[test]
    fn renders_graphs() {
        let d = dag(&[("a", &[]), ("b", &["a"])]).unwrap();
        assert!(d.to_mermaid().contains("s0 --> s1"));
        assert!(d.to_dot().contains("\"a\" -> \"b\";"));
    }
}
