"""Example enricher (Python): each order is joined with its customer's record,
read from a pond (a stream-table join through the host's ``lookup``). Orders
that do not parse or make no sense (no id, no customer, amount <= 0) are
dropped. Output 0 gets the enriched order keyed by customer id.

Same behaviour as plugins/rust/enricher-orders. Config (optional):
``{"customers_pond": "customers"}``.
"""

import weir

I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1


def parse_order(event):
    """(id, customer, amount) of a valid order, else None."""
    try:
        order = event.json()
    except ValueError:
        return None
    if not isinstance(order, dict):
        return None
    order_id, customer, amount = order.get("id"), order.get("customer"), order.get("amount")
    if not isinstance(order_id, str) or not isinstance(customer, str):
        return None
    if type(amount) is not int or not I64_MIN <= amount <= I64_MAX:
        return None
    return order_id, customer, amount


class Orders(weir.Enricher):
    name = "enricher_orders"
    version = "0.1.0"

    def __init__(self, config):
        pond = config.get("customers_pond")
        if pond is not None and not isinstance(pond, str):
            raise ValueError("invalid config: customers_pond must be a string")
        self.customers_pond = "customers" if pond is None else pond

    def process(self, event, out):
        order = parse_order(event)
        if order is None:
            return
        order_id, customer, amount = order
        if not order_id or not customer or amount <= 0:
            return
        customer_info = weir.lookup_json(self.customers_pond, customer)
        enriched = {"id": order_id, "customer": customer, "amount": amount, "customer_info": customer_info}
        out.emit_json(0, customer, enriched)


River = weir.river(Orders)
