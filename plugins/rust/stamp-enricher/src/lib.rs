//! Test enricher for the server's hot-swap tests: every event goes to output
//! 0 with its key, value and headers unchanged, plus a header `stamp` whose
//! value is the config's `stamp` (the deployer puts the version there), so a
//! test can tell which deployed version processed each event.
//!
//! Config: `{"stamp": "v7"}`.

use weir_guest::{Emitter, Enricher, Event};

#[derive(serde::Deserialize, Default)]
struct Config {
    #[serde(default)]
    stamp: String,
}

struct Stamp {
    stamp: String,
}

impl Enricher for Stamp {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = weir_guest::parse_config(config)?;
        Ok(Stamp { stamp: config.stamp })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Emitter) -> Result<(), String> {
        let mut headers: Vec<(&str, &[u8])> = event.headers().collect();
        headers.push(("stamp", self.stamp.as_bytes()));
        out.emit_with_headers(0, event.key(), event.value(), &headers);
        Ok(())
    }
}

weir_guest::enricher!(Stamp);
