// Example enricher (JavaScript): each order is joined with its customer's
// record, read from a pond (a stream-table join through the host's
// `lookup`). Orders that do not parse or make no sense (no id, no customer,
// amount <= 0) are dropped. Output 0 gets the enriched order keyed by
// customer id.
//
// Same behaviour as plugins/rust/enricher-orders. Config (optional):
// {"customers_pond": "customers"}.
import { asI64, enricher, lookupJson } from '../../../guest-sdk/js/enricher.js';

/** [id, customer, amount] of a parseable order, else undefined. */
function parseOrder(event) {
  let order;
  try {
    order = event.json();
  } catch {
    return undefined;
  }
  if (order === null || typeof order !== 'object' || Array.isArray(order)) return undefined;
  const amount = asI64(order.amount);
  if (typeof order.id !== 'string' || typeof order.customer !== 'string' || amount === undefined) return undefined;
  return [order.id, order.customer, amount];
}

export const river = enricher({
  name: 'enricher_orders',
  version: '0.1.0',
  init(config) {
    const pond = config.customers_pond;
    if (pond !== undefined && pond !== null && typeof pond !== 'string') {
      throw new Error('invalid config: customers_pond must be a string');
    }
    return { customersPond: pond === undefined || pond === null ? 'customers' : pond };
  },
  process(event, out, settings) {
    const order = parseOrder(event);
    if (order === undefined) return;
    const [id, customer, amount] = order;
    if (id === '' || customer === '' || amount <= 0n) return;
    const customerInfo = lookupJson(settings.customersPond, customer);
    out.emitJson(0, customer, { id, customer, amount, customer_info: customerInfo });
  },
});
