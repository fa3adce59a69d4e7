//! Benchmark enricher, mirrored natively in `host/benches/plugin.rs`.
//! Config `{"mode": ...}`:
//! - `map`: every event to output 0, same key, same value
//! - `filter`: keep events whose value contains `"side":"buy"`
//! - `json`: parse the value as JSON, keep orders with `qty >= 50`, emit `{"id":..,"qty":..}`

use serde::{Deserialize, Serialize};
use weir_guest::{Emitter, Enricher, Event};

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    mode: String,
}

enum Mode {
    Map,
    Filter,
    Json,
}

#[derive(Deserialize, Serialize)]
struct Order<'a> {
    id: u64,
    #[serde(borrow)]
    side: &'a str,
    qty: u32,
}

#[derive(Serialize)]
struct Slim {
    id: u64,
    qty: u32,
}

struct Bench {
    mode: Mode,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

impl Enricher for Bench {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = weir_guest::parse_config(config)?;
        let mode = match config.mode.as_str() {
            "" | "map" => Mode::Map,
            "filter" => Mode::Filter,
            "json" => Mode::Json,
            other => return Err(format!("unknown mode {other}")),
        };
        Ok(Bench { mode })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Emitter) -> Result<(), String> {
        match self.mode {
            Mode::Map => out.emit(0, event.key(), event.value()),
            Mode::Filter => {
                if contains(event.value(), br#""side":"buy""#) {
                    out.emit(0, event.key(), event.value());
                }
            }
            Mode::Json => {
                let order: Order = event.json().map_err(|e| e.to_string())?;
                if order.qty >= 50 {
                    out.emit_json(
                        0,
                        event.key(),
                        &Slim {
                            id: order.id,
                            qty: order.qty,
                        },
                    )?;
                }
            }
        }
        Ok(())
    }
}

weir_guest::enricher!(Bench);
