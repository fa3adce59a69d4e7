/*
 * Example projection (C): order count and total amount per customer.
 *
 * State: key = customer id, value = {"count": n, "sum": total}.
 * Query: the request is a customer id (answer: its totals, zeros when
 * unknown), or empty (answer: {"<customer>": totals, ...} for all).
 * An order that is not valid JSON fails the batch naming the event.
 *
 * Same behaviour as plugins/rust/projection-totals (64-bit wrap-around).
 */
#include "weir.h"

#include <stdlib.h>
#include <string.h>

const char *const weir_plugin_name = "projection_totals";
const char *const weir_plugin_version = "0.1.0";

typedef struct {
    uint64_t count;
    int64_t sum;
} totals;

bool weir_init(weir_bytes config, weir_error *err) {
    return true;
}

/* Totals from a state value; false + message if it is not valid totals. */
static bool read_totals(weir_bytes raw, totals *t, weir_error *err) {
    weir_json *v = weir_json_parse(raw, err);
    if (!v) return false;
    bool ok = weir_json_as_u64(weir_json_get(v, "count"), &t->count) && weir_json_as_i64(weir_json_get(v, "sum"), &t->sum);
    weir_json_free(v);
    return ok ? true : weir_error_set(err, "a state value is not valid totals");
}

static void write_totals(weir_buf *out, const totals *t) {
    weir_buf_printf(out, "{\"count\":%llu,\"sum\":%lld}", (unsigned long long)t->count, (long long)t->sum);
}

/* The totals under `key`, zeros when absent. */
static bool get_totals(weir_bytes key, totals *t, weir_error *err) {
    weir_buf raw = {0};
    t->count = 0;
    t->sum = 0;
    if (!weir_state_get(key, &raw)) return true;
    bool ok = read_totals((weir_bytes){raw.ptr, raw.len}, t, err);
    weir_buf_free(&raw);
    return ok;
}

bool weir_apply(const weir_event *event, weir_error *err) {
    weir_json *order = weir_json_parse(event->value, err);
    if (!order) return weir_error_set(err, "order at offset %llu is not valid: %s", (unsigned long long)event->offset, err->message);
    const weir_json *customer = weir_json_get(order, "customer");
    int64_t amount;
    if (!customer || customer->type != WEIR_JSON_STRING || !weir_json_as_i64(weir_json_get(order, "amount"), &amount)) {
        weir_json_free(order);
        return weir_error_set(err, "order at offset %llu is not valid: missing or invalid field", (unsigned long long)event->offset);
    }
    weir_bytes key = {(const uint8_t *)customer->str, customer->len};
    totals t;
    bool ok = get_totals(key, &t, err);
    if (ok) {
        t.count += 1;
        t.sum = (int64_t)((uint64_t)t.sum + (uint64_t)amount); /* wraps like Rust release builds */
        weir_buf value = {0};
        write_totals(&value, &t);
        weir_state_put(key, (weir_bytes){value.ptr, value.len});
        weir_buf_free(&value);
    }
    weir_json_free(order);
    return ok;
}

bool weir_query(weir_bytes request, weir_buf *answer, weir_error *err) {
    if (request.len > 0) {
        totals t;
        if (!get_totals(request, &t, err)) return false;
        write_totals(answer, &t);
        return true;
    }
    /* Every customer, in key order (the state's order is byte order). */
    weir_buf_push_str(answer, "{");
    weir_buf last = {0};
    bool first = true, ok = true;
    for (;;) {
        weir_entry *entries;
        weir_bytes after = {last.ptr, last.len};
        size_t n = weir_state_scan(weir_str(""), first ? NULL : &after, 256, &entries);
        for (size_t i = 0; i < n && ok; i++) {
            totals t;
            ok = read_totals((weir_bytes){entries[i].value.ptr, entries[i].value.len}, &t, err);
            if (!ok) break;
            if (answer->len > 1) weir_buf_push_str(answer, ",");
            weir_json_write_string(answer, (const char *)entries[i].key.ptr, entries[i].key.len);
            weir_buf_push_str(answer, ":");
            write_totals(answer, &t);
        }
        if (n > 0) {
            last.len = 0;
            weir_buf_push(&last, entries[n - 1].key.ptr, entries[n - 1].key.len);
        }
        weir_entries_free(entries, n);
        first = false;
        if (!ok || n < 256) break;
    }
    weir_buf_free(&last);
    weir_buf_push_str(answer, "}");
    return ok;
}
