//! `tasker serve` over HTTP: a real server on a loopback port and a real client, on both
//! stores (`on_both_backends!`), a module per area.

mod access;
mod bad_input;
mod events;
mod health;
mod hooks;
mod metrics;
mod openapi;
mod page;
mod plugins;
mod runs;
mod schedules;
mod tasks;
mod templates;
mod tokens;

/// A three-step diamond-less chain on the echo plugin, with a context schema.
pub const CHAIN: &str = "namespace: api
name: chain
version: 1.0.0
description: three steps in a row
context_schema:
  type: object
  required: [customer_id]
  properties:
    customer_id: { type: integer }
steps:
  - { name: a, handler: echo@0.1.0 }
  - { name: b, handler: echo@0.1.0, depends_on: [a] }
  - { name: c, handler: echo@0.1.0, depends_on: [b] }
";

/// One step that fails permanently on its first attempt.
pub const FAILING: &str = "namespace: api
name: failing
version: 1.0.0
steps:
  - name: only
    handler: fail@0.1.0
    config: { mode: permanent }
    retry: { max_attempts: 1 }
";
