"""Example projection (Python): order count and total amount per customer.

State: key = customer id, value = ``{"count": n, "sum": total}``.
Query: the request is a customer id (answer: its totals, zeros when
unknown), or empty (answer: ``{"<customer>": totals, ...}`` for all).
An order that is not valid JSON fails the batch naming the event.

Same behaviour as plugins/rust/projection-totals (including 64-bit
wrap-around of the counters).
"""

import weir

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
U64_MAX = (1 << 64) - 1


def wrap_i64(n):
    return ((n - I64_MIN) & U64_MAX) + I64_MIN


def read_totals(value, what):
    if value is None:
        return 0, 0
    count, total = (value.get("count"), value.get("sum")) if isinstance(value, dict) else (None, None)
    if type(count) is not int or not 0 <= count <= U64_MAX or type(total) is not int or not I64_MIN <= total <= I64_MAX:
        raise ValueError(f"{what} is not valid totals")
    return count, total


class CustomerTotals(weir.Projection):
    name = "projection_totals"
    version = "0.1.0"

    def apply(self, event, state):
        try:
            order = event.json()
            customer, amount = (order.get("customer"), order.get("amount")) if isinstance(order, dict) else (None, None)
            if not isinstance(customer, str):
                raise ValueError("missing or invalid field `customer`")
            if type(amount) is not int or not I64_MIN <= amount <= I64_MAX:
                raise ValueError("missing or invalid field `amount`")
        except ValueError as e:
            raise ValueError(f"order at offset {event.offset} is not valid: {e}") from None
        count, total = read_totals(state.get_json(customer), f"state value under {customer!r}")
        state.put_json(customer, {"count": (count + 1) & U64_MAX, "sum": wrap_i64(total + amount)})

    def query(self, request, state):
        if not request:
            every = {}
            for key, value in state.scan_all(b""):
                count, total = read_totals(weir.loads(value), "a state value")
                every[key.decode("utf-8", "replace")] = {"count": count, "sum": total}
            return weir.dumps(dict(sorted(every.items())))
        count, total = read_totals(state.get_json(request), "the state value")
        return weir.dumps({"count": count, "sum": total})


Pond = weir.pond(CustomerTotals)
