// Example projection (JavaScript): order count and total amount per customer.
//
// State: key = customer id, value = {"count": n, "sum": total}.
// Query: the request is a customer id (answer: its totals, zeros when
// unknown), or empty (answer: {"<customer>": totals, ...} for all).
// An order that is not valid JSON fails the batch naming the event.
//
// Same behaviour as plugins/rust/projection-totals; counters are BigInts
// with 64-bit wrap-around, as in Rust.
import { asI64, asInteger, compareUtf8, dumps, loads, projection, toText } from '../../../guest-sdk/js/projection.js';

const U64_MAX = 2n ** 64n - 1n;

function readTotals(value, what) {
  if (value === undefined) return { count: 0n, sum: 0n };
  const ok = value !== null && typeof value === 'object' && !Array.isArray(value);
  const count = ok ? asInteger(value.count, 0n, U64_MAX) : undefined;
  const sum = ok ? asI64(value.sum) : undefined;
  if (count === undefined || sum === undefined) throw new Error(`${what} is not valid totals`);
  return { count, sum };
}

export const pond = projection({
  name: 'projection_totals',
  version: '0.1.0',
  apply(event, state) {
    let customer, amount;
    try {
      const order = event.json();
      const ok = order !== null && typeof order === 'object' && !Array.isArray(order);
      customer = ok ? order.customer : undefined;
      amount = ok ? asI64(order.amount) : undefined;
      if (typeof customer !== 'string') throw new Error('missing or invalid field `customer`');
      if (amount === undefined) throw new Error('missing or invalid field `amount`');
    } catch (e) {
      throw new Error(`order at offset ${event.offset} is not valid: ${e.message}`);
    }
    const totals = readTotals(state.getJson(customer), `state value under ${JSON.stringify(customer)}`);
    state.putJson(customer, {
      count: BigInt.asUintN(64, totals.count + 1n),
      sum: BigInt.asIntN(64, totals.sum + amount),
    });
  },
  query(request, state) {
    if (request.length === 0) {
      const every = new Map();
      for (const [key, value] of state.scanAll('')) {
        every.set(toText(key, true), readTotals(loads(value), 'a state value'));
      }
      // Sorted by key, as Rust's BTreeMap. Written by hand: a JS object
      // would put integer-like keys first.
      const keys = [...every.keys()].sort(compareUtf8);
      return `{${keys.map((k) => `${dumps(k)}:${dumps(every.get(k))}`).join(',')}}`;
    }
    return dumps(readTotals(state.getJson(request), 'the state value'));
  },
});
