/*
 * Example command handler (C): a bank account.
 *
 * Commands: open {owner}, deposit {amount}, withdraw {amount}, close.
 * Rejections: bad-amount (amount <= 0 or above the configured maximum),
 * not-open, already-open, account-closed, insufficient-funds (no
 * overdraft), balance-not-zero (closing a non-empty account),
 * invalid-command (unknown command or bad body), invalid-state.
 *
 * Same behaviour, events and state bytes as plugins/rust/command-bank.
 * Config (optional): {"max_amount": 1000000}.
 */
#include "weir.h"

#include <stdlib.h>
#include <string.h>

const char *const weir_plugin_name = "command_bank";
const char *const weir_plugin_version = "0.1.0";

static int64_t max_amount = 1000000000;

typedef struct {
    bool open, closed;
    weir_buf owner;
    int64_t balance;
} account;

bool weir_init(weir_bytes config, weir_error *err) {
    max_amount = 1000000000;
    bool empty = true;
    for (size_t i = 0; i < config.len; i++)
        if (config.ptr[i] != ' ' && config.ptr[i] != '\t' && config.ptr[i] != '\n' && config.ptr[i] != '\r') empty = false;
    if (empty) return true;
    weir_json *parsed = weir_json_parse(config, err);
    if (!parsed) return weir_error_set(err, "invalid config: %s", err->message);
    bool ok = true;
    if (parsed->type == WEIR_JSON_OBJECT) {
        const weir_json *limit = weir_json_get(parsed, "max_amount");
        if (limit && limit->type != WEIR_JSON_NULL && !weir_json_as_i64(limit, &max_amount))
            ok = weir_error_set(err, "invalid config: max_amount must be an integer");
    } else if (parsed->type != WEIR_JSON_NULL) {
        ok = weir_error_set(err, "invalid config: expected a JSON object");
    }
    weir_json_free(parsed);
    return ok;
}

/* Rust's str::trim: is the UTF-8 text nothing but Unicode White_Space? */
static bool blank_owner(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        if (c == ' ' || (c >= '\t' && c <= '\r')) { i++; continue; }
        if (c == 0xC2 && i + 1 < n && (p[i + 1] == 0x85 || p[i + 1] == 0xA0)) { i += 2; continue; }
        if (i + 2 < n) {
            uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F);
            if ((c & 0xF0) == 0xE0 &&
                (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
                 cp == 0x205F || cp == 0x3000)) {
                i += 3;
                continue;
            }
        }
        return false;
    }
    return true;
}

/* The account in `state` (empty = a new account); false if it is not one. */
static bool read_account(weir_bytes state, account *a, weir_error *err) {
    memset(a, 0, sizeof *a);
    if (state.len == 0) return true;
    weir_json *v = weir_json_parse(state, err);
    if (!v) return false;
    const weir_json *open = weir_json_get(v, "open"), *closed = weir_json_get(v, "closed");
    const weir_json *owner = weir_json_get(v, "owner");
    bool ok = open && open->type == WEIR_JSON_BOOL && closed && closed->type == WEIR_JSON_BOOL && owner &&
              owner->type == WEIR_JSON_STRING && weir_json_as_i64(weir_json_get(v, "balance"), &a->balance);
    if (ok) {
        a->open = open->boolean;
        a->closed = closed->boolean;
        weir_buf_push(&a->owner, owner->str, owner->len);
    } else {
        weir_error_set(err, "aggregate state is not a valid account");
    }
    weir_json_free(v);
    return ok;
}

static void write_account(weir_buf *out, const account *a) {
    weir_buf_printf(out, "{\"open\":%s,\"closed\":%s,\"owner\":", a->open ? "true" : "false", a->closed ? "true" : "false");
    weir_json_write_string(out, (const char *)a->owner.ptr, a->owner.len);
    weir_buf_printf(out, ",\"balance\":%lld}", (long long)a->balance);
}

static bool check_amount(int64_t amount, weir_rejection *r) {
    if (amount <= 0) return weir_reject(r, "bad-amount", "amount must be positive, got %lld", (long long)amount);
    if (amount > max_amount)
        return weir_reject(r, "bad-amount", "amount %lld exceeds the limit of %lld", (long long)amount, (long long)max_amount);
    return true;
}

static bool usable(const account *a, weir_rejection *r) {
    if (!a->open) return weir_reject(r, "not-open", "the account has not been opened");
    if (a->closed) return weir_reject(r, "account-closed", "the account is closed");
    return true;
}

static void push_amount_event(weir_new_events *events, const char *name, int64_t amount) {
    weir_buf data = {0};
    weir_buf_printf(&data, "{\"amount\":%lld}", (long long)amount);
    weir_new_events_push(events, name, (weir_bytes){data.ptr, data.len});
    weir_buf_free(&data);
}

static bool decide(const weir_command *c, const weir_json *data, const account *a, weir_new_events *events,
                   weir_rejection *r) {
    int64_t amount = 0;
    if (weir_bytes_eq(c->name, "open")) {
        const weir_json *owner = weir_json_get(data, "owner");
        if (!owner || owner->type != WEIR_JSON_STRING) return weir_reject(r, "invalid-command", "`open`: expected {\"owner\": a string}");
        if (a->open) return weir_reject(r, "already-open", "the account is already open");
        if (blank_owner(owner->str, owner->len)) return weir_reject(r, "bad-owner", "an account needs an owner");
        weir_buf body = {0};
        weir_buf_push_str(&body, "{\"owner\":");
        weir_json_write_string(&body, owner->str, owner->len);
        weir_buf_push_str(&body, "}");
        weir_new_events_push(events, "opened", (weir_bytes){body.ptr, body.len});
        weir_buf_free(&body);
        return true;
    }
    bool deposit = weir_bytes_eq(c->name, "deposit"), withdraw = weir_bytes_eq(c->name, "withdraw");
    if (deposit || withdraw) {
        if (!weir_json_as_i64(weir_json_get(data, "amount"), &amount))
            return weir_reject(r, "invalid-command", "`%s`: expected {\"amount\": an integer}", deposit ? "deposit" : "withdraw");
        if (!usable(a, r) || !check_amount(amount, r)) return false;
        if (withdraw && amount > a->balance)
            return weir_reject(r, "insufficient-funds", "cannot withdraw %lld: the balance is %lld", (long long)amount,
                               (long long)a->balance);
        push_amount_event(events, deposit ? "deposited" : "withdrawn", amount);
        return true;
    }
    if (weir_bytes_eq(c->name, "close")) {
        if (data->type != WEIR_JSON_NULL) return weir_reject(r, "invalid-command", "`close`: expected no body");
        if (!usable(a, r)) return false;
        if (a->balance != 0)
            return weir_reject(r, "balance-not-zero", "withdraw the balance of %lld before closing", (long long)a->balance);
        weir_new_events_push(events, "closed", weir_str("null"));
        return true;
    }
    return weir_reject(r, "invalid-command", "`%.*s`: unknown command", (int)c->name.len, (const char *)c->name.ptr);
}

bool weir_decide(const weir_command *command, weir_bytes state, weir_new_events *events, weir_rejection *rejection) {
    weir_error err;
    weir_json *data = weir_json_parse(command->data, &err);
    if (!data) return weir_reject(rejection, "invalid-command", "`%.*s`: %s", (int)command->name.len, (const char *)command->name.ptr, err.message);
    account a;
    bool ok;
    if (!read_account(state, &a, &err)) {
        ok = weir_reject(rejection, "invalid-state", "aggregate state is not valid: %s", err.message);
    } else {
        ok = decide(command, data, &a, events, rejection);
    }
    weir_buf_free(&a.owner);
    weir_json_free(data);
    return ok;
}

static bool apply(account *a, const weir_command_event *e, weir_error *err) {
    weir_json *data = weir_json_parse(e->data, err);
    if (!data) return false;
    int64_t amount;
    bool ok = true;
    const weir_json *owner = weir_json_get(data, "owner");
    if (weir_bytes_eq(e->name, "opened") && owner && owner->type == WEIR_JSON_STRING) {
        a->open = true;
        a->owner.len = 0;
        weir_buf_push(&a->owner, owner->str, owner->len);
    } else if (weir_bytes_eq(e->name, "deposited") && weir_json_as_i64(weir_json_get(data, "amount"), &amount)) {
        a->balance = (int64_t)((uint64_t)a->balance + (uint64_t)amount);
    } else if (weir_bytes_eq(e->name, "withdrawn") && weir_json_as_i64(weir_json_get(data, "amount"), &amount)) {
        a->balance = (int64_t)((uint64_t)a->balance - (uint64_t)amount);
    } else if (weir_bytes_eq(e->name, "closed") && data->type == WEIR_JSON_NULL) {
        a->closed = true;
    } else {
        ok = weir_error_set(err, "cannot read event `%.*s`", (int)e->name.len, (const char *)e->name.ptr);
    }
    weir_json_free(data);
    return ok;
}

bool weir_evolve(weir_bytes state, const weir_command_event *events, size_t count, weir_buf *new_state, weir_error *err) {
    account a;
    bool ok = read_account(state, &a, err);
    for (size_t i = 0; ok && i < count; i++) ok = apply(&a, &events[i], err);
    if (ok) write_account(new_state, &a);
    weir_buf_free(&a.owner);
    return ok;
}
