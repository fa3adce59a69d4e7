//! Example projection: order count and total amount per customer.
//!
//! State: key = customer id, value = `{"count": n, "sum": total}`.
//! Query: the request is a customer id (answer: its totals, zeros when
//! unknown), or empty (answer: `{"<customer>": totals, ...}` for all).
//! An order that is not valid JSON fails the batch naming the event.
//!
//! `apply` only adds each order to a per-batch delta for its customer;
//! `end_batch` folds the deltas into the state, so a customer with many
//! orders in a batch costs one state read, one JSON parse, one JSON write
//! and one state write per batch instead of per order.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use weir_guest::{Event, KeyHasher, Projection, State};

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

struct CustomerTotals {
    /// This batch's orders per customer, not yet in the state.
    deltas: HashMap<String, Totals, KeyHasher>,
}

impl Projection for CustomerTotals {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(CustomerTotals {
            deltas: HashMap::default(),
        })
    }

    fn apply(&mut self, event: &Event<'_>, _state: &mut State) -> Result<(), String> {
        let order: Order = match event.json() {
            Ok(order) => order,
            Err(e) => {
                // The batch fails: forget its deltas (it is redone or split).
                self.deltas.clear();
                return Err(format!("order at offset {} is not valid: {e}", event.offset()));
            }
        };
        let delta = match self.deltas.get_mut(order.customer) {
            Some(delta) => delta,
            None => self.deltas.entry(order.customer.to_owned()).or_default(),
        };
        delta.count += 1;
        delta.sum += order.amount;
        Ok(())
    }

    fn end_batch(&mut self, state: &mut State) -> Result<(), String> {
        let mut result = Ok(());
        for (customer, delta) in self.deltas.drain() {
            if result.is_err() {
                continue; // drain the rest: the next batch starts empty
            }
            let key = customer.as_bytes();
            result = state.get_json::<Totals>(key).and_then(|totals| {
                let mut totals = totals.unwrap_or_default();
                totals.count += delta.count;
                totals.sum += delta.sum;
                state.put_json(key, &totals)
            });
        }
        result
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
