/*
 * weir guest SDK for C: the WIT export glue for one world (chosen at build
 * time with -DWEIR_WORLD_ENRICHER, -DWEIR_WORLD_PROJECTION or
 * -DWEIR_WORLD_COMMAND_HANDLER), batch views,
 * the emitter and the host imports. See weir.h for the plugin's side.
 */
#include "weir.h"

#include <stdlib.h>
#include <string.h>

#if defined(WEIR_WORLD_ENRICHER)
#include "enricher.h"
#define W(name) enricher_##name
#elif defined(WEIR_WORLD_PROJECTION)
#include "projection.h"
#define W(name) projection_##name
#elif defined(WEIR_WORLD_COMMAND_HANDLER)
#include "command_handler.h"
#define W(name) command_handler_##name
#else
#error "define WEIR_WORLD_ENRICHER, WEIR_WORLD_PROJECTION or WEIR_WORLD_COMMAND_HANDLER"
#endif

#include <stdarg.h>
#include <stdio.h>

/* Defined by the plugin. */
extern const char *const weir_plugin_name;
extern const char *const weir_plugin_version;
bool weir_init(weir_bytes config, weir_error *err);

static bool initialised;

/* A host-owned (generated-bindings) string from a C string. */
static void set_string(W(string_t) * out, const char *s) {
    W(string_dup)(out, s);
}

static weir_bytes bytes_of(const uint8_t *ptr, size_t len) {
    return (weir_bytes){ptr, len};
}

void weir_log(enum weir_level level, const char *message) {
    W(string_t) text = {(uint8_t *)message, strlen(message)};
    weir_plugin_host_log((weir_plugin_host_level_t)level, &text);
}

static bool run_init(W(string_t) * config, W(string_t) * err) {
    weir_error e = {{0}};
    bool ok = weir_init(bytes_of(config->ptr, config->len), &e);
    W(string_free)(config);
    if (!ok) {
        set_string(err, e.message[0] ? e.message : "init failed");
        return false;
    }
    initialised = true;
    return true;
}

static void describe(weir_plugin_types_plugin_info_t *ret, weir_plugin_types_plugin_kind_t kind) {
    set_string(&ret->name, weir_plugin_name);
    set_string(&ret->version, weir_plugin_version);
    ret->kind = kind;
}

#if !defined(WEIR_WORLD_COMMAND_HANDLER)

/* ---- batch views ---- */

struct weir_batch_view {
    const weir_plugin_types_batch_t *b;
};

static size_t span_start(const uint32_t *ends, size_t i) {
    return i > 0 ? ends[i - 1] : 0;
}

static weir_bytes slice(const uint8_t *blob, size_t blob_len, const uint32_t *ends, size_t count, size_t i) {
    if (i >= count) return bytes_of(NULL, 0);
    size_t start = span_start(ends, i), end = ends[i];
    if (end < start || end > blob_len) return bytes_of(NULL, 0); /* a correct host never sends this */
    return bytes_of(blob + start, end - start);
}

static weir_event event_at(const weir_batch_view *view, size_t i) {
    const weir_plugin_types_batch_t *b = view->b;
    weir_event e;
    e.batch = view;
    e.index = (uint32_t)i;
    e.offset = i < b->offsets.len ? b->offsets.ptr[i] : 0;
    e.timestamp = i < b->timestamps.len ? b->timestamps.ptr[i] : 0;
    e.key = slice(b->keys.ptr, b->keys.len, b->key_ends.ptr, b->key_ends.len, i);
    e.value = slice(b->values.ptr, b->values.len, b->value_ends.ptr, b->value_ends.len, i);
    return e;
}

size_t weir_event_header_count(const weir_event *event) {
    const weir_plugin_types_header_columns_t *h = &event->batch->b->headers;
    if (event->index >= h->ends.len) return 0;
    size_t start = span_start(h->ends.ptr, event->index), end = h->ends.ptr[event->index];
    return end > start ? end - start : 0;
}

bool weir_event_header(const weir_event *event, size_t j, weir_bytes *name, weir_bytes *value) {
    const weir_plugin_types_header_columns_t *h = &event->batch->b->headers;
    if (j >= weir_event_header_count(event)) return false;
    size_t k = span_start(h->ends.ptr, event->index) + j;
    *name = slice(h->names.ptr, h->names.len, h->name_ends.ptr, h->name_ends.len, k);
    *value = slice(h->values.ptr, h->values.len, h->value_ends.ptr, h->value_ends.len, k);
    return true;
}

bool weir_event_header_get(const weir_event *event, const char *name, weir_bytes *value) {
    weir_bytes n, v;
    for (size_t j = 0; weir_event_header(event, j, &n, &v); j++) {
        if (weir_bytes_eq(n, name)) {
            *value = v;
            return true;
        }
    }
    return false;
}

weir_bytes weir_event_topic(const weir_event *event) {
    return bytes_of(event->batch->b->topic.ptr, event->batch->b->topic.len);
}

uint32_t weir_event_partition(const weir_event *event) {
    return event->batch->b->partition;
}

static bool batch_failure(weir_plugin_types_failure_t *err, const char *message, bool has_index, uint32_t index) {
    set_string(&err->message, message[0] ? message : "error");
    err->event_index.is_some = has_index;
    err->event_index.val = index;
    return false;
}

#endif /* !WEIR_WORLD_COMMAND_HANDLER */

#if defined(WEIR_WORLD_ENRICHER)

bool weir_process(const weir_event *event, weir_emitter *out, weir_error *err);

/* ---- emitter ---- */

struct weir_emitter {
    uint32_t source;
    weir_buf outputs, sources, key_ends, keys, value_ends, values;
    weir_buf h_ends, h_name_ends, h_names, h_value_ends, h_values;
};

static void push_u32(weir_buf *b, size_t v) {
    uint32_t x = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    weir_buf_push(b, &x, sizeof x);
}

weir_buf *weir_emit_value_buffer(weir_emitter *out) {
    return &out->values;
}

static void finish(weir_emitter *out, uint32_t output, weir_bytes key, const weir_event *forward_headers,
                   const weir_header *headers, size_t header_count) {
    push_u32(&out->value_ends, out->values.len);
    weir_buf_push(&out->keys, key.ptr, key.len);
    push_u32(&out->key_ends, out->keys.len);
    push_u32(&out->outputs, output);
    push_u32(&out->sources, out->source);
    for (size_t j = 0; j < header_count; j++) {
        weir_buf_push_str(&out->h_names, headers[j].name);
        push_u32(&out->h_name_ends, out->h_names.len);
        weir_buf_push(&out->h_values, headers[j].value.ptr, headers[j].value.len);
        push_u32(&out->h_value_ends, out->h_values.len);
    }
    if (forward_headers) {
        weir_bytes n, v;
        for (size_t j = 0; weir_event_header(forward_headers, j, &n, &v); j++) {
            weir_buf_push(&out->h_names, n.ptr, n.len);
            push_u32(&out->h_name_ends, out->h_names.len);
            weir_buf_push(&out->h_values, v.ptr, v.len);
            push_u32(&out->h_value_ends, out->h_values.len);
        }
    }
    push_u32(&out->h_ends, out->h_name_ends.len / sizeof(uint32_t));
}

void weir_emit_finish(weir_emitter *out, uint32_t output, weir_bytes key) {
    finish(out, output, key, NULL, NULL, 0);
}

void weir_emit_with_headers(weir_emitter *out, uint32_t output, weir_bytes key, weir_bytes value,
                            const weir_header *headers, size_t header_count) {
    weir_buf_push(&out->values, value.ptr, value.len);
    finish(out, output, key, NULL, headers, header_count);
}

void weir_emit(weir_emitter *out, uint32_t output, weir_bytes key, weir_bytes value) {
    weir_emit_with_headers(out, output, key, value, NULL, 0);
}

void weir_forward(weir_emitter *out, uint32_t output, const weir_event *event) {
    weir_buf_push(&out->values, event->value.ptr, event->value.len);
    finish(out, output, event->key, event, NULL, 0);
}

/* Hand a buffer to the bindings, which free it after the call (only when
 * non-empty, so empty buffers are freed here). */
#define TAKE_U32(dst, buf)                                                  \
    do {                                                                    \
        (dst).len = (buf).len / sizeof(uint32_t);                           \
        (dst).ptr = (dst).len ? (uint32_t *)(buf).ptr : NULL;               \
        if (!(dst).len) weir_buf_free(&(buf));                              \
    } while (0)
#define TAKE_U8(dst, buf)                                                   \
    do {                                                                    \
        (dst).len = (buf).len;                                              \
        (dst).ptr = (dst).len ? (buf).ptr : NULL;                           \
        if (!(dst).len) weir_buf_free(&(buf));                              \
    } while (0)

static void emitter_free(weir_emitter *out) {
    weir_buf *all[] = {&out->outputs, &out->sources, &out->key_ends, &out->keys, &out->value_ends, &out->values,
                       &out->h_ends, &out->h_name_ends, &out->h_names, &out->h_value_ends, &out->h_values};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) weir_buf_free(all[i]);
}

bool weir_lookup(const char *pond, weir_bytes key, weir_buf *value) {
    enricher_string_t p = {(uint8_t *)pond, strlen(pond)};
    enricher_list_u8_t k = {(uint8_t *)key.ptr, key.len};
    enricher_list_u8_t ret = {0};
    if (!weir_plugin_lookup_lookup(&p, &k, &ret)) return false;
    value->ptr = ret.ptr;
    value->len = value->cap = ret.len;
    return true;
}

bool exports_weir_plugin_river_init(enricher_string_t *config, enricher_string_t *err) {
    return run_init(config, err);
}

void exports_weir_plugin_river_describe(exports_weir_plugin_river_plugin_info_t *ret) {
    describe(ret, WEIR_PLUGIN_TYPES_PLUGIN_KIND_ENRICHER);
}

bool exports_weir_plugin_river_process(exports_weir_plugin_river_batch_t *batch, exports_weir_plugin_river_emitted_t *ret,
                                       exports_weir_plugin_river_failure_t *err) {
    if (!initialised) {
        weir_plugin_types_batch_free(batch);
        return batch_failure(err, "plugin not initialised: init was not called", false, 0);
    }
    weir_batch_view view = {batch};
    weir_emitter out;
    memset(&out, 0, sizeof out);
    for (size_t i = 0; i < batch->offsets.len; i++) {
        weir_event event = event_at(&view, i);
        weir_error e = {{0}};
        out.source = (uint32_t)i;
        if (!weir_process(&event, &out, &e)) {
            emitter_free(&out);
            weir_plugin_types_batch_free(batch);
            return batch_failure(err, e.message, true, (uint32_t)i);
        }
    }
    weir_plugin_types_batch_free(batch);
    TAKE_U32(ret->outputs, out.outputs);
    TAKE_U32(ret->sources, out.sources);
    TAKE_U32(ret->key_ends, out.key_ends);
    TAKE_U8(ret->keys, out.keys);
    TAKE_U32(ret->value_ends, out.value_ends);
    TAKE_U8(ret->values, out.values);
    TAKE_U32(ret->headers.ends, out.h_ends);
    TAKE_U32(ret->headers.name_ends, out.h_name_ends);
    TAKE_U8(ret->headers.names, out.h_names);
    TAKE_U32(ret->headers.value_ends, out.h_value_ends);
    TAKE_U8(ret->headers.values, out.h_values);
    return true;
}

#elif defined(WEIR_WORLD_PROJECTION)

bool weir_apply(const weir_event *event, weir_error *err);
bool weir_query(weir_bytes request, weir_buf *answer, weir_error *err);

bool weir_state_get(weir_bytes key, weir_buf *value) {
    projection_list_u8_t k = {(uint8_t *)key.ptr, key.len};
    projection_list_u8_t ret = {0};
    if (!weir_plugin_state_get(&k, &ret)) return false;
    value->ptr = ret.ptr;
    value->len = value->cap = ret.len;
    return true;
}

void weir_state_put(weir_bytes key, weir_bytes value) {
    projection_list_u8_t k = {(uint8_t *)key.ptr, key.len};
    projection_list_u8_t v = {(uint8_t *)value.ptr, value.len};
    weir_plugin_state_put(&k, &v);
}

void weir_state_delete(weir_bytes key) {
    projection_list_u8_t k = {(uint8_t *)key.ptr, key.len};
    weir_plugin_state_delete(&k);
}

size_t weir_state_scan(weir_bytes prefix, const weir_bytes *start_after, uint32_t limit, weir_entry **entries) {
    projection_list_u8_t p = {(uint8_t *)prefix.ptr, prefix.len};
    projection_list_u8_t after;
    if (start_after) {
        after.ptr = (uint8_t *)start_after->ptr;
        after.len = start_after->len;
    }
    projection_list_tuple2_list_u8_list_u8_t ret = {0};
    weir_plugin_state_scan(&p, start_after ? &after : NULL, limit, &ret);
    *entries = calloc(ret.len ? ret.len : 1, sizeof **entries);
    if (!*entries) abort();
    for (size_t i = 0; i < ret.len; i++) {
        (*entries)[i].key = (weir_buf){ret.ptr[i].f0.ptr, ret.ptr[i].f0.len, ret.ptr[i].f0.len};
        (*entries)[i].value = (weir_buf){ret.ptr[i].f1.ptr, ret.ptr[i].f1.len, ret.ptr[i].f1.len};
    }
    free(ret.ptr);
    return ret.len;
}

void weir_entries_free(weir_entry *entries, size_t count) {
    for (size_t i = 0; i < count; i++) {
        weir_buf_free(&entries[i].key);
        weir_buf_free(&entries[i].value);
    }
    free(entries);
}

bool exports_weir_plugin_pond_init(projection_string_t *config, projection_string_t *err) {
    return run_init(config, err);
}

void exports_weir_plugin_pond_describe(exports_weir_plugin_pond_plugin_info_t *ret) {
    describe(ret, WEIR_PLUGIN_TYPES_PLUGIN_KIND_PROJECTION);
}

bool exports_weir_plugin_pond_apply(exports_weir_plugin_pond_batch_t *batch, exports_weir_plugin_pond_failure_t *err) {
    if (!initialised) {
        weir_plugin_types_batch_free(batch);
        return batch_failure(err, "plugin not initialised: init was not called", false, 0);
    }
    weir_batch_view view = {batch};
    for (size_t i = 0; i < batch->offsets.len; i++) {
        weir_event event = event_at(&view, i);
        weir_error e = {{0}};
        if (!weir_apply(&event, &e)) {
            weir_plugin_types_batch_free(batch);
            return batch_failure(err, e.message, true, (uint32_t)i);
        }
    }
    weir_plugin_types_batch_free(batch);
    return true;
}

bool exports_weir_plugin_pond_query(projection_list_u8_t *request, projection_list_u8_t *ret, projection_string_t *err) {
    weir_buf answer = {0};
    weir_error e = {{0}};
    bool ok = initialised ? weir_query(bytes_of(request->ptr, request->len), &answer, &e)
                          : weir_error_set(&e, "plugin not initialised: init was not called");
    projection_list_u8_free(request);
    if (!ok) {
        weir_buf_free(&answer);
        set_string(err, e.message[0] ? e.message : "query failed");
        return false;
    }
    ret->len = answer.len;
    ret->ptr = answer.len ? answer.ptr : NULL;
    if (!answer.len) weir_buf_free(&answer);
    return true;
}

#elif defined(WEIR_WORLD_COMMAND_HANDLER)

bool weir_decide(const weir_command *command, weir_bytes state, weir_new_events *events, weir_rejection *rejection);
bool weir_evolve(weir_bytes state, const weir_command_event *events, size_t count, weir_buf *new_state, weir_error *err);

struct weir_new_events {
    exports_weir_plugin_service_event_t *items;
    size_t len, cap;
};

void weir_new_events_push(weir_new_events *events, const char *name, weir_bytes data) {
    if (events->len == events->cap) {
        events->cap = events->cap ? events->cap * 2 : 4;
        exports_weir_plugin_service_event_t *items = realloc(events->items, events->cap * sizeof *items);
        if (!items) abort();
        events->items = items;
    }
    exports_weir_plugin_service_event_t *e = &events->items[events->len++];
    set_string(&e->name, name);
    e->data.len = data.len;
    e->data.ptr = data.len ? malloc(data.len) : NULL;
    if (data.len && !e->data.ptr) abort();
    if (data.len) memcpy(e->data.ptr, data.ptr, data.len);
}

bool weir_reject(weir_rejection *rejection, const char *code, const char *fmt, ...) {
    snprintf(rejection->code, sizeof rejection->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rejection->message, sizeof rejection->message, fmt, ap);
    va_end(ap);
    return false;
}

static bool blank(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r' && p[i] != '\f') return false;
    return true;
}

/* A body as JSON: blank means null (as the Rust SDK reads it). */
static weir_bytes body(const uint8_t *p, size_t n) {
    return blank(p, n) ? weir_str("null") : bytes_of(p, n);
}

bool exports_weir_plugin_service_init(command_handler_string_t *config, command_handler_string_t *err) {
    return run_init(config, err);
}

void exports_weir_plugin_service_describe(exports_weir_plugin_service_plugin_info_t *ret) {
    describe(ret, WEIR_PLUGIN_TYPES_PLUGIN_KIND_COMMAND_HANDLER);
}

bool exports_weir_plugin_service_decide(exports_weir_plugin_service_command_t *command, command_handler_list_u8_t *state,
                                        exports_weir_plugin_service_list_event_t *ret,
                                        exports_weir_plugin_service_rejection_t *err) {
    weir_rejection rejection = {{0}, {0}};
    weir_new_events events = {0};
    bool ok;
    if (!initialised) {
        ok = weir_reject(&rejection, "not-initialised", "plugin not initialised: init was not called");
    } else {
        weir_command c = {bytes_of(command->id.ptr, command->id.len),
                          bytes_of(command->aggregate.ptr, command->aggregate.len),
                          bytes_of(command->name.ptr, command->name.len), body(command->data.ptr, command->data.len)};
        ok = weir_decide(&c, bytes_of(state->ptr, state->len), &events, &rejection);
    }
    weir_plugin_types_command_free(command);
    command_handler_list_u8_free(state);
    if (!ok) {
        for (size_t i = 0; i < events.len; i++) weir_plugin_types_event_free(&events.items[i]);
        free(events.items);
        set_string(&err->code, rejection.code[0] ? rejection.code : "rejected");
        set_string(&err->message, rejection.message);
        return false;
    }
    ret->len = events.len;
    ret->ptr = events.items;
    if (!events.len) {
        free(events.items);
        ret->ptr = NULL;
    }
    return true;
}

void exports_weir_plugin_service_evolve(command_handler_list_u8_t *state, exports_weir_plugin_service_list_event_t *events,
                                        command_handler_list_u8_t *ret) {
    weir_command_event *views = calloc(events->len ? events->len : 1, sizeof *views);
    if (!views) abort();
    for (size_t i = 0; i < events->len; i++) {
        views[i].name = bytes_of(events->ptr[i].name.ptr, events->ptr[i].name.len);
        views[i].data = body(events->ptr[i].data.ptr, events->ptr[i].data.len);
    }
    weir_buf next = {0};
    weir_error e = {{0}};
    bool ok = initialised ? weir_evolve(bytes_of(state->ptr, state->len), views, events->len, &next, &e)
                          : weir_error_set(&e, "plugin not initialised: init was not called");
    free(views);
    exports_weir_plugin_service_list_event_free(events);
    command_handler_list_u8_free(state);
    if (!ok) {
        /* No error channel: trap, with the reason on stderr for the host. */
        fprintf(stderr, "evolve failed: %s\n", e.message);
        abort();
    }
    ret->len = next.len;
    ret->ptr = next.len ? next.ptr : NULL;
    if (!next.len) weir_buf_free(&next);
}

#endif
