//! Attack: return text that is not JSON (bypasses the SDK, which would serialize).
#![allow(clippy::too_many_arguments)] // in the generated bindings
wit_bindgen::generate!({ world: "step-handler", path: "../../wit", generate_all });

struct Garbage;

impl Guest for Garbage {
    fn handle(_ctx: StepContext) -> Result<String, StepError> {
        Ok("{this is not json".to_string())
    }
}

export!(Garbage);
