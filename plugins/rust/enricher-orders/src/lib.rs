//! Example enricher: each order is joined with its customer's record, read
//! from a pond (a stream–table join through the host's `lookup`). Orders that
//! do not parse or make no sense (no id, no customer, amount <= 0) are
//! dropped. Output 0 gets the enriched order keyed by customer id.
//!
//! Config (optional): `{"customers_pond": "customers"}`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use weir_guest::{Emitter, Enricher, Event};

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    customers_pond: Option<String>,
}

/// Borrowed where the JSON string has no escapes, owned where it has: a
/// plain `&str` would make an order like `{"id": "a\"b", …}` fail to parse.
#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    customer: Cow<'a, str>,
    amount: i64,
}

#[derive(Serialize)]
struct EnrichedOrder<'a> {
    id: &'a str,
    customer: &'a str,
    amount: i64,
    /// The customer's record from the pond, `null` when unknown.
    customer_info: Option<serde_json::Value>,
}

struct Orders {
    customers_pond: String,
}

impl Enricher for Orders {
    fn init(config: &str) -> Result<Self, String> {
        let config: Config = weir_guest::parse_config(config)?;
        Ok(Orders {
            customers_pond: config
                .customers_pond
                .unwrap_or_else(|| "customers".to_string()),
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Emitter) -> Result<(), String> {
        let Ok(order) = event.json::<Order>() else {
            return Ok(());
        };
        if order.id.is_empty() || order.customer.is_empty() || order.amount <= 0 {
            return Ok(());
        }
        let customer_info =
            weir_guest::lookup_json(&self.customers_pond, order.customer.as_bytes());
        let enriched = EnrichedOrder {
            id: &order.id,
            customer: &order.customer,
            amount: order.amount,
            customer_info,
        };
        out.emit_json(0, order.customer.as_bytes(), &enriched)
    }
}

weir_guest::enricher!(Orders);
