/*
 * JSON for weir C plugins, with serde_json's conventions: strict parsing
 * (UTF-8, no NaN, no trailing data, integers in i64 / u64 kept exact and
 * larger ones read as floats), compact output with serde_json's string
 * escapes and float notation (shortest round-trip digits; plain for
 * decimal exponents -5..=15, else 1.5e+20 / 1e-7).
 */
#include "weir.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers and errors (shared by the whole SDK) ---- */

weir_bytes weir_str(const char *s) {
    return (weir_bytes){(const uint8_t *)s, strlen(s)};
}

bool weir_bytes_eq(weir_bytes a, const char *s) {
    size_t n = strlen(s);
    return a.len == n && (n == 0 || memcmp(a.ptr, s, n) == 0);
}

static void buf_reserve(weir_buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + extra) cap *= 2;
    uint8_t *p = realloc(b->ptr, cap);
    if (!p) abort(); /* out of memory: the host discards the instance */
    b->ptr = p;
    b->cap = cap;
}

void weir_buf_push(weir_buf *b, const void *data, size_t len) {
    if (len == 0) return;
    buf_reserve(b, len);
    memcpy(b->ptr + b->len, data, len);
    b->len += len;
}

void weir_buf_push_str(weir_buf *b, const char *s) {
    weir_buf_push(b, s, strlen(s));
}

void weir_buf_printf(weir_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)b->ptr + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void weir_buf_free(weir_buf *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

bool weir_error_set(weir_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- parser ---- */

typedef struct {
    const uint8_t *p, *end, *start;
    weir_error *err;
    int depth;
} parser;

static bool fail(parser *ps, const char *what) {
    return weir_error_set(ps->err, "%s at byte %zu", what, (size_t)(ps->p - ps->start));
}

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r')) ps->p++;
}

static void put_utf8(weir_buf *b, uint32_t cp) {
    uint8_t tmp[4];
    size_t n;
    if (cp < 0x80) { tmp[0] = (uint8_t)cp; n = 1; }
    else if (cp < 0x800) { tmp[0] = 0xC0 | (cp >> 6); tmp[1] = 0x80 | (cp & 0x3F); n = 2; }
    else if (cp < 0x10000) { tmp[0] = 0xE0 | (cp >> 12); tmp[1] = 0x80 | ((cp >> 6) & 0x3F); tmp[2] = 0x80 | (cp & 0x3F); n = 3; }
    else { tmp[0] = 0xF0 | (cp >> 18); tmp[1] = 0x80 | ((cp >> 12) & 0x3F); tmp[2] = 0x80 | ((cp >> 6) & 0x3F); tmp[3] = 0x80 | (cp & 0x3F); n = 4; }
    weir_buf_push(b, tmp, n);
}

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const uint8_t *p, const uint8_t *end) {
    uint8_t c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) { n = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; cp = c & 0x07; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    return n;
}

static int hex4(const uint8_t *p, const uint8_t *end, uint32_t *out) {
    if (end - p < 4) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

static bool parse_string(parser *ps, weir_buf *out) {
    ps->p++; /* opening quote */
    for (;;) {
        if (ps->p >= ps->end) return fail(ps, "EOF while parsing a string");
        uint8_t c = *ps->p;
        if (c == '"') { ps->p++; break; }
        if (c < 0x20) return fail(ps, "control character in string");
        if (c == '\\') {
            ps->p++;
            if (ps->p >= ps->end) return fail(ps, "EOF while parsing a string");
            uint8_t e = *ps->p++;
            switch (e) {
            case '"': weir_buf_push(out, "\"", 1); break;
            case '\\': weir_buf_push(out, "\\", 1); break;
            case '/': weir_buf_push(out, "/", 1); break;
            case 'b': weir_buf_push(out, "\b", 1); break;
            case 'f': weir_buf_push(out, "\f", 1); break;
            case 'n': weir_buf_push(out, "\n", 1); break;
            case 'r': weir_buf_push(out, "\r", 1); break;
            case 't': weir_buf_push(out, "\t", 1); break;
            case 'u': {
                uint32_t cp;
                if (!hex4(ps->p, ps->end, &cp)) return fail(ps, "invalid \\u escape");
                ps->p += 4;
                if (cp >= 0xDC00 && cp <= 0xDFFF) return fail(ps, "lone trailing surrogate");
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo;
                    if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' || !hex4(ps->p + 2, ps->end, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return fail(ps, "lone leading surrogate");
                    ps->p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                put_utf8(out, cp);
                break;
            }
            default: return fail(ps, "invalid escape");
            }
            continue;
        }
        size_t n = utf8_len(ps->p, ps->end);
        if (n == 0) return fail(ps, "invalid UTF-8 in string");
        weir_buf_push(out, ps->p, n);
        ps->p += n;
    }
    return true;
}

static bool take_string(parser *ps, char **str, size_t *len) {
    weir_buf b = {0};
    if (!parse_string(ps, &b)) { weir_buf_free(&b); return false; }
    weir_buf_push(&b, "", 1); /* NUL terminator, not counted */
    *str = (char *)b.ptr;
    *len = b.len - 1;
    return true;
}

static bool parse_number(parser *ps, weir_json *v) {
    const uint8_t *s = ps->p;
    bool neg = false, is_float = false;
    if (*ps->p == '-') { neg = true; ps->p++; }
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, "invalid number");
    if (*ps->p == '0') {
        ps->p++;
        if (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') return fail(ps, "invalid number");
    } else {
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    if (ps->p < ps->end && *ps->p == '.') {
        is_float = true;
        ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, "invalid number");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        is_float = true;
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-')) ps->p++;
        if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') return fail(ps, "invalid number");
        while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') ps->p++;
    }
    size_t n = (size_t)(ps->p - s);
    char tmp[512];
    char *text = n < sizeof tmp ? tmp : malloc(n + 1);
    if (!text) abort();
    memcpy(text, s, n);
    text[n] = 0;
    if (!is_float) {
        errno = 0;
        if (neg) {
            long long x = strtoll(text, NULL, 10);
            /* serde_json reads "-0" as the float -0.0 */
            if (errno == 0 && x != 0) { v->type = WEIR_JSON_INT; v->i = x; }
            else is_float = true;
        } else {
            unsigned long long x = strtoull(text, NULL, 10);
            if (errno == 0 && x <= INT64_MAX) { v->type = WEIR_JSON_INT; v->i = (int64_t)x; }
            else if (errno == 0) { v->type = WEIR_JSON_UINT; v->u = x; }
            else is_float = true;
        }
    }
    if (is_float) {
        v->type = WEIR_JSON_FLOAT;
        v->f = strtod(text, NULL);
        if (v->f == HUGE_VAL || v->f == -HUGE_VAL) {
            if (text != tmp) free(text);
            return fail(ps, "number out of range");
        }
    }
    if (text != tmp) free(text);
    return true;
}

static bool parse_value(parser *ps, weir_json *v);

static bool parse_array(parser *ps, weir_json *v) {
    size_t cap = 0;
    ps->p++;
    v->type = WEIR_JSON_ARRAY;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') { ps->p++; return true; }
    for (;;) {
        if (v->len == cap) {
            cap = cap ? cap * 2 : 4;
            weir_json *items = realloc(v->items, cap * sizeof *items);
            if (!items) abort();
            v->items = items;
        }
        memset(&v->items[v->len], 0, sizeof *v->items);
        v->len++;
        if (!parse_value(ps, &v->items[v->len - 1])) return false;
        skip_ws(ps);
        if (ps->p >= ps->end) return fail(ps, "EOF while parsing a list");
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == ']') { ps->p++; return true; }
        return fail(ps, "expected `,` or `]`");
    }
}

static bool parse_object(parser *ps, weir_json *v) {
    size_t cap = 0;
    ps->p++;
    v->type = WEIR_JSON_OBJECT;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') { ps->p++; return true; }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "key must be a string");
        if (v->len == cap) {
            cap = cap ? cap * 2 : 4;
            weir_json *items = realloc(v->items, cap * sizeof *items);
            char **keys = realloc(v->keys, cap * sizeof *keys);
            size_t *lens = realloc(v->key_lens, cap * sizeof *lens);
            if (!items || !keys || !lens) abort();
            v->items = items;
            v->keys = keys;
            v->key_lens = lens;
        }
        size_t i = v->len;
        memset(&v->items[i], 0, sizeof *v->items);
        v->keys[i] = NULL;
        v->key_lens[i] = 0;
        v->len++;
        if (!take_string(ps, &v->keys[i], &v->key_lens[i])) return false;
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "expected `:`");
        ps->p++;
        if (!parse_value(ps, &v->items[i])) return false;
        skip_ws(ps);
        if (ps->p >= ps->end) return fail(ps, "EOF while parsing an object");
        if (*ps->p == ',') { ps->p++; continue; }
        if (*ps->p == '}') { ps->p++; return true; }
        return fail(ps, "expected `,` or `}`");
    }
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return fail(ps, "expected value");
    ps->p += n;
    return true;
}

static bool parse_value(parser *ps, weir_json *v) {
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "EOF while parsing a value");
    if (++ps->depth > 128) return fail(ps, "recursion limit exceeded");
    bool ok;
    switch (*ps->p) {
    case '{': ok = parse_object(ps, v); break;
    case '[': ok = parse_array(ps, v); break;
    case '"': v->type = WEIR_JSON_STRING; ok = take_string(ps, &v->str, &v->len); break;
    case 't': v->type = WEIR_JSON_BOOL; v->boolean = true; ok = literal(ps, "true"); break;
    case 'f': v->type = WEIR_JSON_BOOL; v->boolean = false; ok = literal(ps, "false"); break;
    case 'n': v->type = WEIR_JSON_NULL; ok = literal(ps, "null"); break;
    default: ok = parse_number(ps, v); break;
    }
    ps->depth--;
    return ok;
}

static void free_inner(weir_json *v) {
    free(v->str);
    for (size_t i = 0; i < v->len && (v->type == WEIR_JSON_ARRAY || v->type == WEIR_JSON_OBJECT); i++) {
        free_inner(&v->items[i]);
        if (v->type == WEIR_JSON_OBJECT) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lens);
}

void weir_json_free(weir_json *value) {
    if (!value) return;
    free_inner(value);
    free(value);
}

weir_json *weir_json_parse(weir_bytes text, weir_error *err) {
    weir_json *v = calloc(1, sizeof *v);
    if (!v) abort();
    parser ps = {text.ptr, text.ptr + text.len, text.ptr, err, 0};
    if (!parse_value(&ps, v)) { weir_json_free(v); return NULL; }
    skip_ws(&ps);
    if (ps.p != ps.end) { fail(&ps, "trailing characters"); weir_json_free(v); return NULL; }
    return v;
}

const weir_json *weir_json_get(const weir_json *object, const char *key) {
    if (!object || object->type != WEIR_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = object->len; i-- > 0;)
        if (object->key_lens[i] == n && memcmp(object->keys[i], key, n) == 0) return &object->items[i];
    return NULL;
}

bool weir_json_as_i64(const weir_json *value, int64_t *out) {
    if (!value || value->type != WEIR_JSON_INT) return false;
    *out = value->i;
    return true;
}

bool weir_json_as_u64(const weir_json *value, uint64_t *out) {
    if (!value) return false;
    if (value->type == WEIR_JSON_UINT) { *out = value->u; return true; }
    if (value->type == WEIR_JSON_INT && value->i >= 0) { *out = (uint64_t)value->i; return true; }
    return false;
}

/* ---- sorting (serde_json::Value's BTreeMap shape) ---- */

static int key_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an < bn ? -1 : an > bn);
}

void weir_json_sort_keys(weir_json *v) {
    if (v->type == WEIR_JSON_ARRAY) {
        for (size_t i = 0; i < v->len; i++) weir_json_sort_keys(&v->items[i]);
        return;
    }
    if (v->type != WEIR_JSON_OBJECT) return;
    for (size_t i = 0; i < v->len; i++) weir_json_sort_keys(&v->items[i]);
    /* Stable insertion sort; a repeated key keeps its last value. */
    for (size_t i = 1; i < v->len; i++) {
        weir_json item = v->items[i];
        char *key = v->keys[i];
        size_t klen = v->key_lens[i];
        size_t j = i;
        while (j > 0 && key_cmp(v->keys[j - 1], v->key_lens[j - 1], key, klen) > 0) {
            v->items[j] = v->items[j - 1];
            v->keys[j] = v->keys[j - 1];
            v->key_lens[j] = v->key_lens[j - 1];
            j--;
        }
        v->items[j] = item;
        v->keys[j] = key;
        v->key_lens[j] = klen;
    }
    size_t w = 0;
    for (size_t i = 0; i < v->len; i++) {
        if (i + 1 < v->len && key_cmp(v->keys[i], v->key_lens[i], v->keys[i + 1], v->key_lens[i + 1]) == 0) {
            free_inner(&v->items[i]);
            free(v->keys[i]);
            continue;
        }
        v->items[w] = v->items[i];
        v->keys[w] = v->keys[i];
        v->key_lens[w] = v->key_lens[i];
        w++;
    }
    v->len = w;
}

/* ---- writer ---- */

void weir_json_write_string(weir_buf *out, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    weir_buf_push(out, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c == '\b') esc = "\\b";
        else if (c == '\f') esc = "\\f";
        else if (c < 0x20) {
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0'; u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = 0;
            esc = u;
        }
        if (esc) {
            weir_buf_push(out, s + i - run, run);
            run = 0;
            weir_buf_push_str(out, esc);
        } else {
            run++;
        }
    }
    weir_buf_push(out, s + len - run, run);
    weir_buf_push(out, "\"", 1);
}

void weir_json_write_float(weir_buf *out, double value) {
    if (value != value || value == HUGE_VAL || value == -HUGE_VAL) { weir_buf_push_str(out, "null"); return; }
    if (value == 0) { weir_buf_push_str(out, signbit(value) ? "-0.0" : "0.0"); return; }
    /* Shortest digits that read back as the same double. */
    char sci[40];
    for (int precision = 0; precision < 17; precision++) {
        snprintf(sci, sizeof sci, "%.*e", precision, value);
        if (strtod(sci, NULL) == value) break;
    }
    const char *p = sci;
    bool neg = *p == '-';
    if (neg) p++;
    char digits[24];
    size_t n = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[n++] = *p;
    while (n > 1 && digits[n - 1] == '0') n--;
    digits[n] = 0;
    int e = atoi(p + 1);
    int point = e + 1;
    if (neg) weir_buf_push(out, "-", 1);
    if (e >= -5 && e <= 15) {
        if ((int)n <= point) {
            weir_buf_push(out, digits, n);
            for (int i = (int)n; i < point; i++) weir_buf_push(out, "0", 1);
            weir_buf_push(out, ".0", 2);
        } else if (point > 0) {
            weir_buf_push(out, digits, (size_t)point);
            weir_buf_push(out, ".", 1);
            weir_buf_push(out, digits + point, n - (size_t)point);
        } else {
            weir_buf_push(out, "0.", 2);
            for (int i = 0; i < -point; i++) weir_buf_push(out, "0", 1);
            weir_buf_push(out, digits, n);
        }
        return;
    }
    weir_buf_push(out, digits, 1);
    if (n > 1) {
        weir_buf_push(out, ".", 1);
        weir_buf_push(out, digits + 1, n - 1);
    }
    weir_buf_printf(out, "e%c%d", e >= 0 ? '+' : '-', e >= 0 ? e : -e);
}

void weir_json_write(weir_buf *out, const weir_json *v) {
    switch (v->type) {
    case WEIR_JSON_NULL: weir_buf_push_str(out, "null"); break;
    case WEIR_JSON_BOOL: weir_buf_push_str(out, v->boolean ? "true" : "false"); break;
    case WEIR_JSON_INT: weir_buf_printf(out, "%lld", (long long)v->i); break;
    case WEIR_JSON_UINT: weir_buf_printf(out, "%llu", (unsigned long long)v->u); break;
    case WEIR_JSON_FLOAT: weir_json_write_float(out, v->f); break;
    case WEIR_JSON_STRING: weir_json_write_string(out, v->str, v->len); break;
    case WEIR_JSON_ARRAY:
        weir_buf_push(out, "[", 1);
        for (size_t i = 0; i < v->len; i++) {
            if (i) weir_buf_push(out, ",", 1);
            weir_json_write(out, &v->items[i]);
        }
        weir_buf_push(out, "]", 1);
        break;
    case WEIR_JSON_OBJECT:
        weir_buf_push(out, "{", 1);
        for (size_t i = 0; i < v->len; i++) {
            if (i) weir_buf_push(out, ",", 1);
            weir_json_write_string(out, v->keys[i], v->key_lens[i]);
            weir_buf_push(out, ":", 1);
            weir_json_write(out, &v->items[i]);
        }
        weir_buf_push(out, "}", 1);
        break;
    }
}
