//! # weir-guest: write weir plugins in Rust
//!
//! A weir plugin is a WebAssembly component built for `wasm32-wasip2`
//! (`crate-type = ["cdylib"]`, `cargo build --release --target wasm32-wasip2`).
//! This crate hides the WIT contract (`weir:plugin@0.1.0`) and its columnar
//! batch encoding: you implement one trait and name your type in one macro.
//!
//! | kind | trait | macro | you write |
//! |---|---|---|---|
//! | enricher (river) | [`Enricher`] | [`enricher!`] | a function over one [`Event`] that emits records through an [`Emitter`] |
//! | projection (pond) | [`Projection`] | [`projection!`] | a function over one [`Event`] with a [`State`] handle, plus an optional `query` |
//! | command handler (service) | [`CommandHandler`] | [`command_handler!`] | `decide` and `evolve` over your own serde types |
//!
//! Events are zero-copy views into the batch the host sent; JSON helpers use
//! `serde_json`. Plugin code is deterministic by contract: there is no file
//! system, network, environment or real randomness in the sandbox.
//!
//! ## An enricher
//!
//! Orders are enriched with the customer's record from the `customers` pond;
//! orders that do not parse are dropped.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use weir_guest::{Emitter, Enricher, Event};
//!
//! #[derive(Deserialize)]
//! struct Order { customer: String, amount: i64 }
//!
//! #[derive(Serialize)]
//! struct Enriched<'a> { customer: &'a str, amount: i64, customer_name: Option<String> }
//!
//! struct Orders;
//!
//! impl Enricher for Orders {
//!     fn init(_config: &str) -> Result<Self, String> { Ok(Orders) }
//!
//!     fn process(&mut self, event: &Event<'_>, out: &mut Emitter) -> Result<(), String> {
//!         let Ok(order) = event.json::<Order>() else { return Ok(()) }; // drop invalid orders
//!         let customer_name = weir_guest::lookup_json::<serde_json::Value>("customers", order.customer.as_bytes())
//!             .and_then(|c| c["name"].as_str().map(str::to_owned));
//!         let enriched = Enriched { customer: &order.customer, amount: order.amount, customer_name };
//!         out.emit_json(0, order.customer.as_bytes(), &enriched)
//!     }
//! }
//!
//! weir_guest::enricher!(Orders);
//! ```
//!
//! ## A projection
//!
//! Count and total per customer, queryable by customer id.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use weir_guest::{Event, Projection, State};
//!
//! #[derive(Deserialize)]
//! struct Order { customer: String, amount: i64 }
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Totals { count: u64, sum: i64 }
//!
//! struct CustomerTotals;
//!
//! impl Projection for CustomerTotals {
//!     fn init(_config: &str) -> Result<Self, String> { Ok(CustomerTotals) }
//!
//!     fn apply(&mut self, event: &Event<'_>, state: &mut State) -> Result<(), String> {
//!         let order: Order = event.json().map_err(|e| format!("bad order: {e}"))?;
//!         let mut totals: Totals = state.get_json(order.customer.as_bytes())?.unwrap_or_default();
//!         totals.count += 1;
//!         totals.sum += order.amount;
//!         state.put_json(order.customer.as_bytes(), &totals)
//!     }
//!
//!     fn query(&mut self, request: &[u8], state: &State) -> Result<Vec<u8>, String> {
//!         let totals: Totals = state.get_json(request)?.unwrap_or_default();
//!         serde_json::to_vec(&totals).map_err(|e| e.to_string())
//!     }
//! }
//!
//! weir_guest::projection!(CustomerTotals);
//! ```
//!
//! ## A command handler
//!
//! Commands and events are serde enums in serde's default ("externally
//! tagged") form: the command `deposit` with data `{"amount":5}` is the JSON
//! `{"deposit":{"amount":5}}`, and an event variant `Deposited { amount }`
//! becomes the event named `deposited` with data `{"amount":5}` (use
//! `#[serde(rename_all = "kebab-case")]`). State is any serde type with a
//! `Default` (the state of an aggregate that has no events yet).
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use weir_guest::{CommandHandler, CommandMeta, Rejection};
//!
//! #[derive(Deserialize)]
//! #[serde(rename_all = "kebab-case")]
//! enum Command { Deposit { amount: i64 }, Withdraw { amount: i64 } }
//!
//! #[derive(Serialize, Deserialize)]
//! #[serde(rename_all = "kebab-case")]
//! enum Event { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
//!
//! #[derive(Serialize, Deserialize, Default)]
//! struct Account { balance: i64 }
//!
//! struct Bank;
//!
//! impl CommandHandler for Bank {
//!     type Command = Command;
//!     type Event = Event;
//!     type State = Account;
//!
//!     fn init(_config: &str) -> Result<Self, String> { Ok(Bank) }
//!
//!     fn decide(&self, command: Command, state: &Account, _meta: &CommandMeta) -> Result<Vec<Event>, Rejection> {
//!         match command {
//!             Command::Deposit { amount } if amount <= 0 => Err(Rejection::new("bad-amount", "amount must be positive")),
//!             Command::Deposit { amount } => Ok(vec![Event::Deposited { amount }]),
//!             Command::Withdraw { amount } if amount > state.balance => Err(Rejection::new("insufficient-funds", "overdraft")),
//!             Command::Withdraw { amount } => Ok(vec![Event::Withdrawn { amount }]),
//!         }
//!     }
//!
//!     fn evolve(state: &mut Account, event: &Event) {
//!         match event {
//!             Event::Deposited { amount } => state.balance += amount,
//!             Event::Withdrawn { amount } => state.balance -= amount,
//!         }
//!     }
//! }
//!
//! weir_guest::command_handler!(Bank);
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::type_complexity))]

extern crate self as weir_guest;

mod bindings;
mod command;
mod emit;
mod event;
mod exports;
mod host;
mod state;

pub use command::{CommandHandler, CommandMeta, Rejection};
pub use emit::Emitter;
pub use event::{Batch, Event};
pub use exports::{Enricher, PluginMeta, Projection};
pub use host::{log, lookup, lookup_json};
pub use state::State;

/// Parse a plugin's JSON config; an empty or `null` config gives `T::default()`.
pub fn parse_config<T: serde::de::DeserializeOwned + Default>(config: &str) -> Result<T, String> {
    let trimmed = config.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(trimmed).map_err(|e| format!("invalid config: {e}"))
}

/// Implementation details used by the export macros. Not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::{command_handler, enricher, projection};
    pub use crate::exports::{CommandHandlerExport, EnricherExport, ProjectionExport};
    pub use wit_bindgen;
}

/// Export a type implementing [`Enricher`] as this component's enricher.
/// Use once, in the plugin crate (a `cdylib`).
#[macro_export]
macro_rules! enricher {
    ($plugin:ty) => {
        impl $crate::PluginMeta for $plugin {
            const NAME: &'static str = env!("CARGO_PKG_NAME");
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        const _: () = {
            type __WeirEnricherExport = $crate::__private::EnricherExport<$plugin>;
            $crate::__private::enricher::__export_weir_enricher!(__WeirEnricherExport with_types_in $crate::__private::enricher);
        };
    };
}

/// Export a type implementing [`Projection`] as this component's projection.
#[macro_export]
macro_rules! projection {
    ($plugin:ty) => {
        impl $crate::PluginMeta for $plugin {
            const NAME: &'static str = env!("CARGO_PKG_NAME");
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        const _: () = {
            type __WeirProjectionExport = $crate::__private::ProjectionExport<$plugin>;
            $crate::__private::projection::__export_weir_projection!(__WeirProjectionExport with_types_in $crate::__private::projection);
        };
    };
}

/// Export a type implementing [`CommandHandler`] as this component's
/// command handler.
#[macro_export]
macro_rules! command_handler {
    ($plugin:ty) => {
        impl $crate::PluginMeta for $plugin {
            const NAME: &'static str = env!("CARGO_PKG_NAME");
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        const _: () = {
            type __WeirCommandHandlerExport = $crate::__private::CommandHandlerExport<$plugin>;
            $crate::__private::command_handler::__export_weir_command_handler!(__WeirCommandHandlerExport with_types_in $crate::__private::command_handler);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, PartialEq, Debug)]
    struct Cfg {
        #[serde(default)]
        limit: u32,
    }

    #[test]
    fn config_defaults_when_empty() {
        assert_eq!(parse_config::<Cfg>("").unwrap(), Cfg::default());
        assert_eq!(parse_config::<Cfg>(" null ").unwrap(), Cfg::default());
        assert_eq!(
            parse_config::<Cfg>(r#"{"limit":3}"#).unwrap(),
            Cfg { limit: 3 }
        );
        assert!(parse_config::<Cfg>("{").is_err());
    }
}
