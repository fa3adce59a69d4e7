//! Test component: exports `weir:plugin/river@0.1.0` with `init` only.
wit_bindgen::generate!({ path: "wit", world: "missing-export" });

struct Broken;

impl exports::weir::plugin::river::Guest for Broken {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Broken);
