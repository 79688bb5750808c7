//! Store and engine scenarios that run on both backends (`on_both_backends!`), a module per
//! area. More suites move here from the crates' own `tests/` folders (issue #13).

mod guest_data;
mod random_dags;
