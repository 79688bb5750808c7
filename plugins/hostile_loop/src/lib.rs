//! Attack: spin forever.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

struct Spin;

impl Handler for Spin {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
            if x == u64::MAX {
                break;
            }
        }
        Ok(x)
    }
}

export_handler!(Spin);
