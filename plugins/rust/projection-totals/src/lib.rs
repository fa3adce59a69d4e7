//! Example projection: order count and total amount per customer.
//!
//! State: key = customer id, value = `{"count": n, "sum": total}`.
//! Query: the request is a customer id (answer: its totals, zeros when
//! unknown), or empty (answer: `{"<customer>": totals, ...}` for all).
//! An order that is not valid JSON fails the batch naming the event.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir_guest::{Event, Projection, State};

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow)]
    customer: &'a str,
    amount: i64,
}

#[derive(Serialize, Deserialize, Default)]
struct Totals {
    count: u64,
    sum: i64,
}

struct CustomerTotals;

impl Projection for CustomerTotals {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(CustomerTotals)
    }

    fn apply(&mut self, event: &Event<'_>, state: &mut State) -> Result<(), String> {
        let order: Order = event
            .json()
            .map_err(|e| format!("order at offset {} is not valid: {e}", event.offset()))?;
        let key = order.customer.as_bytes();
        let mut totals: Totals = state.get_json(key)?.unwrap_or_default();
        totals.count += 1;
        totals.sum += order.amount;
        state.put_json(key, &totals)
    }

    fn query(&mut self, request: &[u8], state: &State) -> Result<Vec<u8>, String> {
        let answer = if request.is_empty() {
            let mut all = BTreeMap::new();
            for (key, value) in state.scan_all(b"") {
                let totals: Totals = serde_json::from_slice(&value).map_err(|e| e.to_string())?;
                all.insert(String::from_utf8_lossy(&key).into_owned(), totals);
            }
            serde_json::to_vec(&all)
        } else {
            let totals: Totals = state.get_json(request)?.unwrap_or_default();
            serde_json::to_vec(&totals)
        };
        answer.map_err(|e| e.to_string())
    }
}

weir_guest::projection!(CustomerTotals);
