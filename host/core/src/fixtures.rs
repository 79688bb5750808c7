//! DAG fixtures shared by the store's SQL tests, the test coordinator and benchmarks.
//!
//! Every fixture runs the handler `noop@1.0.0` unless given another one.

use crate::template::Template;

/// The handler fixtures use by default.
pub const NOOP: &str = "noop@1.0.0";

fn build(name: &str, handler: &str, steps: &[(String, Vec<String>)]) -> Template {
    let mut yaml = format!("namespace: fixtures\nname: {name}\nversion: 1.0.0\nsteps:\n");
    for (step, deps) in steps {
        yaml.push_str(&format!(
            "  - name: {step}\n    handler: {handler}\n    depends_on: [{}]\n    retry: {{ max_attempts: 3, backoff: {{ base_ms: 1000, multiplier: 2.0, cap_ms: 60000, jitter: 0.0 }} }}\n",
            deps.join(", ")
        ));
    }
    Template::from_yaml_named(&yaml, name).expect("fixtures are valid")
}

fn s(name: &str, deps: &[&str]) -> (String, Vec<String>) {
    (
        name.to_owned(),
        deps.iter().map(|d| (*d).to_owned()).collect(),
    )
}

/// `step_1 -> step_2 -> … -> step_n`.
pub fn linear(n: usize, handler: &str) -> Template {
    let steps: Vec<_> = (1..=n)
        .map(|i| {
            let deps = if i == 1 {
                vec![]
            } else {
                vec![format!("step_{}", i - 1)]
            };
            (format!("step_{i}"), deps)
        })
        .collect();
    build(&format!("linear_{n}"), handler, &steps)
}

/// `a -> (b, c) -> d`.
pub fn diamond(handler: &str) -> Template {
    build(
        "diamond",
        handler,
        &[
            s("a", &[]),
            s("b", &["a"]),
            s("c", &["a"]),
            s("d", &["b", "c"]),
        ],
    )
}

/// A root with two children, each with two leaves: 7 steps.
pub fn tree(handler: &str) -> Template {
    build(
        "tree",
        handler,
        &[
            s("root", &[]),
            s("left", &["root"]),
            s("right", &["root"]),
            s("left_a", &["left"]),
            s("left_b", &["left"]),
            s("right_a", &["right"]),
            s("right_b", &["right"]),
        ],
    )
}

/// Three independent roots merge into one step, then one more.
pub fn parallel_merge(handler: &str) -> Template {
    build(
        "parallel_merge",
        handler,
        &[
            s("fetch_a", &[]),
            s("fetch_b", &[]),
            s("fetch_c", &[]),
            s("merge", &["fetch_a", "fetch_b", "fetch_c"]),
            s("publish", &["merge"]),
        ],
    )
}

/// Twenty steps mixing roots, fan-out, fan-in, a long chain and skip-level edges.
pub fn mixed_20(handler: &str) -> Template {
    build(
        "mixed_20",
        handler,
        &[
            s("m01", &[]),
            s("m02", &[]),
            s("m03", &["m01"]),
            s("m04", &["m01"]),
            s("m05", &["m02"]),
            s("m06", &["m03", "m04"]),
            s("m07", &["m04", "m05"]),
            s("m08", &["m06"]),
            s("m09", &["m06", "m07"]),
            s("m10", &["m07"]),
            s("m11", &["m01", "m09"]),
            s("m12", &["m08"]),
            s("m13", &["m10", "m12"]),
            s("m14", &["m11"]),
            s("m15", &["m13", "m14"]),
            s("m16", &["m02"]),
            s("m17", &["m16"]),
            s("m18", &["m15", "m17"]),
            s("m19", &["m18"]),
            s("m20", &["m19", "m03"]),
        ],
    )
}

/// Every fixture, by name.
pub fn all(handler: &str) -> Vec<Template> {
    vec![
        linear(4, handler),
        diamond(handler),
        tree(handler),
        parallel_merge(handler),
        mixed_20(handler),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_are_valid_dags_of_the_promised_shapes() {
        let all = all(NOOP);
        let sizes: Vec<usize> = all.iter().map(|t| t.steps.len()).collect();
        assert_eq!(sizes, vec![4, 4, 7, 5, 20]);
        for t in &all {
            let dag = t.dag().unwrap();
            assert_eq!(dag.len(), t.steps.len());
        }
        assert_eq!(linear(4, NOOP).dag().unwrap().levels(), vec![0, 1, 2, 3]);
        let mixed = mixed_20(NOOP).dag().unwrap();
        // m01 -> m03 -> m06 -> m08 -> m12 -> m13 -> m15 -> m18 -> m19 -> m20.
        assert_eq!(*mixed.levels().iter().max().unwrap(), 9);
    }
}
