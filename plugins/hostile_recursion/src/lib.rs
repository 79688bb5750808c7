//! Attack: unbounded recursion until the stack overflows.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[inline(never)]
#[allow(unconditional_recursion)] // the attack
fn dive(depth: u64, pad: [u64; 8]) -> u64 {
    let next = std::hint::black_box([
        pad[0] + depth,
        pad[1],
        pad[2],
        pad[3],
        pad[4],
        pad[5],
        pad[6],
        pad[7],
    ]);
    dive(depth + 1, next).wrapping_add(std::hint::black_box(next[7]))
}

struct Deep;

impl Handler for Deep {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        Ok(dive(0, [1; 8]))
    }
}

export_handler!(Deep);
