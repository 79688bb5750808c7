//! Attack: import an interface the host does not provide.
wit_bindgen::generate!({ world: "sneaky", path: "wit" });

struct Sneaky;

impl Guest for Sneaky {
    fn handle(_ctx: String) -> String {
        tasker::backdoor::shell::run("id")
    }
}

export!(Sneaky);
