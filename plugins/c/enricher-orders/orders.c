/*
 * Example enricher (C): each order is joined with its customer's record,
 * read from a pond (a stream-table join through the host's lookup). Orders
 * that do not parse or make no sense (no id, no customer, amount <= 0) are
 * dropped. Output 0 gets the enriched order keyed by customer id.
 *
 * Same behaviour as plugins/rust/enricher-orders. Config (optional):
 * {"customers_pond": "customers"}.
 */
#include "weir.h"

#include <stdlib.h>
#include <string.h>

const char *const weir_plugin_name = "enricher_orders";
const char *const weir_plugin_version = "0.1.0";

static char *customers_pond;

static bool blank(weir_bytes text) {
    for (size_t i = 0; i < text.len; i++)
        if (text.ptr[i] != ' ' && text.ptr[i] != '\t' && text.ptr[i] != '\n' && text.ptr[i] != '\r') return false;
    return true;
}

bool weir_init(weir_bytes config, weir_error *err) {
    free(customers_pond);
    customers_pond = strdup("customers");
    if (blank(config)) return true;
    weir_json *parsed = weir_json_parse(config, err);
    if (!parsed) return weir_error_set(err, "invalid config: %s", err->message);
    bool ok = true;
    if (parsed->type == WEIR_JSON_OBJECT) {
        const weir_json *pond = weir_json_get(parsed, "customers_pond");
        if (pond && pond->type == WEIR_JSON_STRING) {
            free(customers_pond);
            customers_pond = strdup(pond->str);
        } else if (pond && pond->type != WEIR_JSON_NULL) {
            ok = weir_error_set(err, "invalid config: customers_pond must be a string");
        }
    } else if (parsed->type != WEIR_JSON_NULL) {
        ok = weir_error_set(err, "invalid config: expected a JSON object");
    }
    weir_json_free(parsed);
    return ok;
}

bool weir_process(const weir_event *event, weir_emitter *out, weir_error *err) {
    weir_error parse_error;
    weir_json *order = weir_json_parse(event->value, &parse_error);
    if (!order) return true; /* not JSON: dropped */
    const weir_json *id = weir_json_get(order, "id");
    const weir_json *customer = weir_json_get(order, "customer");
    int64_t amount;
    bool valid = id && id->type == WEIR_JSON_STRING && customer && customer->type == WEIR_JSON_STRING &&
                 weir_json_as_i64(weir_json_get(order, "amount"), &amount);
    if (!valid || id->len == 0 || customer->len == 0 || amount <= 0) {
        weir_json_free(order);
        return true;
    }
    weir_bytes customer_key = {(const uint8_t *)customer->str, customer->len};
    weir_json *info = NULL;
    weir_buf raw = {0};
    if (weir_lookup(customers_pond, customer_key, &raw)) {
        weir_error info_error;
        info = weir_json_parse((weir_bytes){raw.ptr, raw.len}, &info_error);
        if (info) weir_json_sort_keys(info);
        weir_buf_free(&raw);
    }
    weir_buf *value = weir_emit_value_buffer(out);
    weir_buf_push_str(value, "{\"id\":");
    weir_json_write_string(value, id->str, id->len);
    weir_buf_push_str(value, ",\"customer\":");
    weir_json_write_string(value, customer->str, customer->len);
    weir_buf_printf(value, ",\"amount\":%lld,\"customer_info\":", (long long)amount);
    if (info) weir_json_write(value, info);
    else weir_buf_push_str(value, "null");
    weir_buf_push_str(value, "}");
    weir_emit_finish(out, 0, customer_key);
    weir_json_free(info);
    weir_json_free(order);
    return true;
}
