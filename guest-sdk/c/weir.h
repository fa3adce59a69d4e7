/*
 * weir guest SDK for C: write weir plugins as components with clang,
 * wasi-libc and `wit-bindgen c` (guest-sdk/c/build.sh does the build).
 *
 * The SDK implements the WIT exports of the plugin's world and calls the
 * functions below that the plugin defines. Plugin code sees one event at a
 * time (zero-copy views into the columnar batch), emits through an emitter,
 * and reads / writes its pond's state. A small JSON library reads and
 * writes JSON the way the Rust SDK (serde_json) does, so C and Rust plugins
 * produce byte-identical output.
 *
 * Every plugin defines:
 *   const char *const weir_plugin_name, *const weir_plugin_version;
 *   bool weir_init(weir_bytes config, weir_error *err);
 * and, by world:
 *   enricher:        bool weir_process(const weir_event *event, weir_emitter *out, weir_error *err);
 *   projection:      bool weir_apply(const weir_event *event, weir_error *err);
 *                    bool weir_query(weir_bytes request, weir_buf *answer, weir_error *err);
 *   command-handler: bool weir_decide(const weir_command *command, weir_bytes state,
 *                                     weir_new_events *events, weir_rejection *rejection);
 *                    bool weir_evolve(weir_bytes state, const weir_command_event *events,
 *                                     size_t count, weir_buf *new_state, weir_error *err);
 * Returning false reports the error (the batch fails naming the event, the
 * command is rejected, init refuses the config). `evolve` has no error
 * channel in the contract: false there traps (the host reports the message
 * and commits nothing).
 */
#ifndef WEIR_H
#define WEIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A borrowed byte span. */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} weir_bytes;

weir_bytes weir_str(const char *s);
bool weir_bytes_eq(weir_bytes a, const char *s);

/* A growable, owned byte buffer (free with weir_buf_free). */
typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} weir_buf;

void weir_buf_push(weir_buf *b, const void *data, size_t len);
void weir_buf_push_str(weir_buf *b, const char *s);
void weir_buf_printf(weir_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void weir_buf_free(weir_buf *b);

/* An error message for the host (set with weir_error_set). */
typedef struct {
    char message[512];
} weir_error;

bool weir_error_set(weir_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logging through the host. */
enum weir_level { WEIR_TRACE, WEIR_DEBUG, WEIR_INFO, WEIR_WARN, WEIR_ERROR };
void weir_log(enum weir_level level, const char *message);

/* ---- batches ---------------------------------------------------------- */

typedef struct weir_batch_view weir_batch_view;

/* One event of a batch; the spans point into the batch. */
typedef struct {
    const weir_batch_view *batch;
    uint32_t index;
    uint64_t offset;
    int64_t timestamp;
    weir_bytes key; /* empty = no key */
    weir_bytes value;
} weir_event;

size_t weir_event_header_count(const weir_event *event);
/* Header j (0-based) of the event: name and value. */
bool weir_event_header(const weir_event *event, size_t j, weir_bytes *name, weir_bytes *value);
/* The first header called `name`. */
bool weir_event_header_get(const weir_event *event, const char *name, weir_bytes *value);
weir_bytes weir_event_topic(const weir_event *event);
uint32_t weir_event_partition(const weir_event *event);

/* ---- enricher ----------------------------------------------------------- */

typedef struct weir_emitter weir_emitter;

typedef struct {
    const char *name;
    weir_bytes value;
} weir_header;

/* Emit a record to output `output` (index into the manifest's outputs). */
void weir_emit(weir_emitter *out, uint32_t output, weir_bytes key, weir_bytes value);
void weir_emit_with_headers(weir_emitter *out, uint32_t output, weir_bytes key, weir_bytes value,
                            const weir_header *headers, size_t header_count);
/* Emit the event unchanged (key, value, headers). */
void weir_forward(weir_emitter *out, uint32_t output, const weir_event *event);
/* The value buffer of the record being built: append to it, then finish
 * with weir_emit_finish (saves a copy for values built in place). */
weir_buf *weir_emit_value_buffer(weir_emitter *out);
void weir_emit_finish(weir_emitter *out, uint32_t output, weir_bytes key);

/* The committed value under `key` in pond `pond` (enrichers only). On true,
 * *value is owned by the caller (weir_buf_free). */
bool weir_lookup(const char *pond, weir_bytes key, weir_buf *value);

/* ---- projection state -------------------------------------------------------- */

bool weir_state_get(weir_bytes key, weir_buf *value);
void weir_state_put(weir_bytes key, weir_bytes value);
void weir_state_delete(weir_bytes key);

typedef struct {
    weir_buf key, value;
} weir_entry;

/* Up to `limit` entries under `prefix` in key order, strictly after
 * `start_after` when non-NULL. Free with weir_entries_free. */
size_t weir_state_scan(weir_bytes prefix, const weir_bytes *start_after, uint32_t limit, weir_entry **entries);
void weir_entries_free(weir_entry *entries, size_t count);

/* ---- command handler ------------------------------------------------------ */

/* A command; `data` is its JSON body ("null" when the body is blank). */
typedef struct {
    weir_bytes id, aggregate, name, data;
} weir_command;

/* An event as the host passes it to evolve: name and JSON data. */
typedef struct {
    weir_bytes name, data;
} weir_command_event;

typedef struct weir_new_events weir_new_events;

/* Append an event to decide's answer (name and JSON data are copied). */
void weir_new_events_push(weir_new_events *events, const char *name, weir_bytes data);

typedef struct {
    char code[64];
    char message[448];
} weir_rejection;

/* Fill `rejection`; returns false, for `return weir_reject(...)`. */
bool weir_reject(weir_rejection *rejection, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- JSON (serde_json's conventions) ------------------------------------- */

typedef enum { WEIR_JSON_NULL, WEIR_JSON_BOOL, WEIR_JSON_INT, WEIR_JSON_UINT, WEIR_JSON_FLOAT,
               WEIR_JSON_STRING, WEIR_JSON_ARRAY, WEIR_JSON_OBJECT } weir_json_type;

typedef struct weir_json weir_json;
struct weir_json {
    weir_json_type type;
    bool boolean;
    int64_t i;  /* WEIR_JSON_INT: fits in i64 */
    uint64_t u; /* WEIR_JSON_UINT: above i64::MAX, fits in u64 */
    double f;   /* WEIR_JSON_FLOAT (also integers beyond u64) */
    char *str;  /* WEIR_JSON_STRING (UTF-8, NUL-terminated; may contain NUL: use len) */
    size_t len; /* string length / number of items */
    weir_json *items; /* ARRAY items / OBJECT values */
    char **keys;      /* OBJECT keys */
    size_t *key_lens;
};

/* Parse (strict: UTF-8, no trailing data). NULL + message on error. */
weir_json *weir_json_parse(weir_bytes text, weir_error *err);
void weir_json_free(weir_json *value);
/* Member `key` of an object (the last one if repeated), else NULL. */
const weir_json *weir_json_get(const weir_json *object, const char *key);
/* Sort object keys (recursively), keeping the last of repeated keys: the
 * shape of a Rust serde_json::Value. */
void weir_json_sort_keys(weir_json *value);
/* Serialise compactly as serde_json does. */
void weir_json_write(weir_buf *out, const weir_json *value);
/* Writers for building JSON by hand. */
void weir_json_write_string(weir_buf *out, const char *s, size_t len);
void weir_json_write_float(weir_buf *out, double value);
/* The string / i64 value, if the member has that type. */
bool weir_json_as_i64(const weir_json *value, int64_t *out);
bool weir_json_as_u64(const weir_json *value, uint64_t *out);

#endif
