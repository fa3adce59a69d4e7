//! Test component: exports `weir:plugin/river@0.2.0` (an incompatible version).
wit_bindgen::generate!({ path: "wit", world: "future-river" });

struct Future;

impl exports::weir::plugin::river::Guest for Future {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn process(batch: Vec<u8>) -> Vec<u8> {
        batch
    }
}

export!(Future);
