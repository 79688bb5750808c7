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
    /// Builds the graph from `(step name, its dependencies)` in declaration order; on failure,
    /// the first of [`Dag::problems`].
    pub fn build<'a, I, D>(steps: I) -> Result<Dag, DagError>
    where
        I: IntoIterator<Item = (&'a str, D)>,
        D: IntoIterator<Item = &'a str>,
    {
        let steps: Vec<(&str, Vec<&str>)> = steps
            .into_iter()
            .map(|(n, d)| (n, d.into_iter().collect()))
            .collect();
        let graph = Graph::of(&steps);
        if let Some(first) = graph.problems.into_iter().next() {
            return Err(first);
        }
        let order = graph.order.expect("a graph without problems has an order");
        Ok(Dag {
            names: steps.iter().map(|(n, _)| (*n).to_owned()).collect(),
            parents: graph.parents,
            children: graph.children,
            order,
        })
    }

    /// Every reason the steps are not a DAG, in declaration order: each repeated step, each
    /// unknown or repeated dependency, and one cycle per knot of mutually dependent steps.
    pub fn problems<'a, I, D>(steps: I) -> Vec<DagError>
    where
        I: IntoIterator<Item = (&'a str, D)>,
        D: IntoIterator<Item = &'a str>,
    {
        let steps: Vec<(&str, Vec<&str>)> = steps
            .into_iter()
            .map(|(n, d)| (n, d.into_iter().collect()))
            .collect();
        Graph::of(&steps).problems
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

/// The edges that make sense (unknown and repeated dependencies dropped) and what is wrong.
struct Graph {
    parents: Vec<Vec<usize>>,
    children: Vec<Vec<usize>>,
    /// Kahn's order, when there is no cycle.
    order: Option<Vec<usize>>,
    problems: Vec<DagError>,
}

impl Graph {
    fn of(steps: &[(&str, Vec<&str>)]) -> Graph {
        let n = steps.len();
        let mut problems = Vec::new();
        if n == 0 {
            problems.push(DagError::Empty);
        }
        let mut index = HashMap::with_capacity(n);
        for (i, (name, _)) in steps.iter().enumerate() {
            if index.contains_key(name) {
                problems.push(DagError::DuplicateStep {
                    name: (*name).to_owned(),
                });
            } else {
                index.insert(*name, i);
            }
        }
        let mut parents = vec![Vec::new(); n];
        let mut children = vec![Vec::new(); n];
        for (i, (name, deps)) in steps.iter().enumerate() {
            for dep in deps {
                let problem = match index.get(dep) {
                    None => Some(DagError::UnknownDependency {
                        step: (*name).to_owned(),
                        dependency: (*dep).to_owned(),
                    }),
                    Some(p) if parents[i].contains(p) => Some(DagError::DuplicateDependency {
                        step: (*name).to_owned(),
                        dependency: (*dep).to_owned(),
                    }),
                    Some(&p) => {
                        parents[i].push(p);
                        children[p].push(i);
                        None
                    }
                };
                problems.extend(problem);
            }
        }
        let mut graph = Graph {
            parents,
            children,
            order: None,
            problems,
        };
        match graph.kahn() {
            Ok(order) => graph.order = Some(order),
            Err(left) => {
                let cycles = graph.cycles(&left, steps);
                graph.problems.extend(cycles);
            }
        }
        graph
    }

    /// Kahn's algorithm, stable in declaration order; on failure, the steps left over (every
    /// one is on a cycle or downstream of one).
    fn kahn(&self) -> Result<Vec<usize>, Vec<bool>> {
        let n = self.parents.len();
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
            Ok(order)
        } else {
            Err(indegree.iter().map(|&d| d > 0).collect())
        }
    }

    /// One cycle per strongly connected component of the leftover steps that has one (more
    /// than one step, or a step depending on itself), each read along dependency edges.
    fn cycles(&self, left: &[bool], steps: &[(&str, Vec<&str>)]) -> Vec<DagError> {
        let components = self.components(left);
        // Members of each component, in declaration order; components by their first member.
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut slot: HashMap<usize, usize> = HashMap::new();
        for i in (0..left.len()).filter(|&i| left[i]) {
            let k = *slot.entry(components[i]).or_insert_with(|| {
                members.push(Vec::new());
                members.len() - 1
            });
            members[k].push(i);
        }
        members
            .into_iter()
            .filter(|m| m.len() > 1 || self.parents[m[0]].contains(&m[0]))
            .map(|m| {
                let knot = components[m[0]];
                let path = self.shortest_cycle(m[0], |i| left[i] && components[i] == knot);
                DagError::Cycle {
                    path: path.into_iter().map(|i| steps[i].0.to_owned()).collect(),
                }
            })
            .collect()
    }

    /// Tarjan's strongly connected components over the leftover steps, iteratively (a
    /// template may have thousands of steps): a component id per step.
    fn components(&self, left: &[bool]) -> Vec<usize> {
        let n = left.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack = Vec::new();
        let mut component = vec![usize::MAX; n];
        let mut next = 0;
        let mut count = 0;
        for root in (0..n).filter(|&i| left[i]) {
            if index[root] != usize::MAX {
                continue;
            }
            // (step, position in its children list)
            let mut calls = vec![(root, 0usize)];
            index[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (v, ref mut pos)) = calls.last_mut() {
                if let Some(&w) = self.children[v].get(*pos) {
                    *pos += 1;
                    if !left[w] {
                        continue;
                    }
                    if index[w] == usize::MAX {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component[w] = count;
                        if w == v {
                            break;
                        }
                    }
                    count += 1;
                }
            }
        }
        component
    }

    /// The shortest walk from `start` along child edges inside `within` back to `start`.
    fn shortest_cycle(&self, start: usize, within: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut came_from = HashMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for &c in &self.children[v] {
                if c == start {
                    let mut back = Vec::new();
                    let mut cur = v;
                    while cur != start {
                        back.push(cur);
                        cur = came_from[&cur];
                    }
                    back.reverse();
                    let mut path = vec![start];
                    path.extend(back);
                    path.push(start);
                    return path;
                }
                if within(c) && !came_from.contains_key(&c) && c != start {
                    came_from.insert(c, v);
                    queue.push_back(c);
                }
            }
        }
        unreachable!("a step of a strongly connected component reaches itself")
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
    fn every_problem_is_listed_not_only_the_first() {
        let steps: &[(&str, &[&str])] = &[
            ("a", &["b"]),
            ("b", &["a"]),
            ("c", &["nope", "d"]),
            ("d", &["c", "c"]),
            ("e", &["e"]),
            ("a", &[]),
            ("f", &["a"]),
        ];
        let problems = Dag::problems(steps.iter().map(|(n, d)| (*n, d.iter().copied())));
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "step 'a' is defined more than once",
                "step 'c' depends on unknown step 'nope'",
                "step 'd' lists dependency 'c' more than once",
                "dependency cycle: a -> b -> a",
                "dependency cycle: c -> d -> c",
                "dependency cycle: e -> e",
            ]
        );
        // A cycle downstream of another is not a second cycle.
        assert!(
            Dag::problems([("x", vec!["y"]), ("y", vec!["x"]), ("z", vec!["x"])])
                .iter()
                .all(|p| p.to_string() == "dependency cycle: x -> y -> x")
        );
    }

    #[test]
    fn a_long_chain_closed_into_a_ring_is_one_cycle() {
        let names: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
        let steps = (0..names.len()).map(|i| {
            let parent = &names[(i + names.len() - 1) % names.len()];
            (names[i].as_str(), [parent.as_str()])
        });
        let problems = Dag::problems(steps);
        assert_eq!(problems.len(), 1);
        let DagError::Cycle { path } = &problems[0] else {
            panic!("{problems:?}")
        };
        assert_eq!(path.len(), 5001);
        assert_eq!((path[0].as_str(), path[1].as_str()), ("s0", "s1"));
    }

    #[test]
    fn renders_graphs() {
        let d = dag(&[("a", &[]), ("b", &["a"])]).unwrap();
        assert!(d.to_mermaid().contains("s0 --> s1"));
        assert!(d.to_dot().contains("\"a\" -> \"b\";"));
    }
}
