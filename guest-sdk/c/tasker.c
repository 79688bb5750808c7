/* The C guest SDK: adapts tasker_handle() to the generated `handle` export, plus small
 * JSON and buffer helpers. See tasker.h. */
#include "tasker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step_handler.h"

/* ---- buffers ---- */

static bool buf_reserve(tasker_buf_t *b, size_t extra) {
    if (b->oom) return false;
    if (b->len + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) {
        if (cap > SIZE_MAX / 2) {
            b->oom = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(b->ptr, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->ptr = p;
    b->cap = cap;
    return true;
}

void tasker_buf_raw(tasker_buf_t *b, const char *s, size_t n) {
    if (!buf_reserve(b, n)) return;
    memcpy(b->ptr + b->len, s, n);
    b->len += n;
    b->ptr[b->len] = '\0';
}

void tasker_buf_puts(tasker_buf_t *b, const char *s) { tasker_buf_raw(b, s, strlen(s)); }

static void buf_vprintf(tasker_buf_t *b, const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0 || !buf_reserve(b, (size_t)n)) return;
    vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
}

void tasker_buf_printf(tasker_buf_t *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void tasker_buf_json_string(tasker_buf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    tasker_buf_raw(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': tasker_buf_raw(b, "\\\"", 2); break;
        case '\\': tasker_buf_raw(b, "\\\\", 2); break;
        case '\n': tasker_buf_raw(b, "\\n", 2); break;
        case '\r': tasker_buf_raw(b, "\\r", 2); break;
        case '\t': tasker_buf_raw(b, "\\t", 2); break;
        default:
            if (c < 0x20) {
                char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                tasker_buf_raw(b, esc, 6);
            } else {
                tasker_buf_raw(b, (const char *)&s[i], 1);
            }
        }
    }
    tasker_buf_raw(b, "\"", 1);
}

void tasker_buf_free(tasker_buf_t *b) {
    free(b->ptr);
    *b = (tasker_buf_t){0};
}

/* ---- errors ---- */

bool tasker_permanent(tasker_error_t *err, const char *fmt, ...) {
    err->permanent = true;
    err->retry_after_ms = -1;
    err->message.len = 0;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&err->message, fmt, ap);
    va_end(ap);
    return false;
}

bool tasker_retryable(tasker_error_t *err, int64_t retry_after_ms, const char *fmt, ...) {
    err->permanent = false;
    err->retry_after_ms = retry_after_ms;
    err->message.len = 0;
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&err->message, fmt, ap);
    va_end(ap);
    return false;
}

/* ---- JSON reading ---- */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* p at an opening quote: the position after the closing quote, or NULL. */
static const char *skip_string(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\') {
            p++;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* The end of the value starting at p (whitespace skipped), or NULL. */
static const char *skip_value(const char *p, const char *end) {
    p = skip_ws(p, end);
    if (p >= end) return NULL;
    if (*p == '"') return skip_string(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string(p, end);
                if (!p) return NULL;
                continue;
            }
            if (*p == '{' || *p == '[') depth++;
            if (*p == '}' || *p == ']') {
                if (--depth == 0) return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *start = p;
    while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ' && *p != '\n' &&
           *p != '\r' && *p != '\t')
        p++;
    return p > start ? p : NULL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool read_u4(const char *p, const char *end, uint32_t *out) {
    if (end - p < 4) return false;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p[i]);
        if (h < 0) return false;
        v = v * 16 + (uint32_t)h;
    }
    *out = v;
    return true;
}

static void put_utf8(tasker_buf_t *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    tasker_buf_raw(b, u, n);
}

bool tasker_json_string(tasker_str_t value, tasker_buf_t *out) {
    const char *p = skip_ws(value.ptr, value.ptr + value.len), *end = value.ptr + value.len;
    if (p >= end || *p != '"') return false;
    out->len = 0;
    tasker_buf_raw(out, "", 0);
    for (p++; p < end; p++) {
        char c = *p;
        if (c == '"') return !out->oom;
        if (c != '\\') {
            tasker_buf_raw(out, p, 1);
            continue;
        }
        if (++p >= end) return false;
        switch (*p) {
        case '"': tasker_buf_raw(out, "\"", 1); break;
        case '\\': tasker_buf_raw(out, "\\", 1); break;
        case '/': tasker_buf_raw(out, "/", 1); break;
        case 'b': tasker_buf_raw(out, "\b", 1); break;
        case 'f': tasker_buf_raw(out, "\f", 1); break;
        case 'n': tasker_buf_raw(out, "\n", 1); break;
        case 'r': tasker_buf_raw(out, "\r", 1); break;
        case 't': tasker_buf_raw(out, "\t", 1); break;
        case 'u': {
            uint32_t cp;
            if (!read_u4(p + 1, end, &cp)) return false;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (end - p < 7 || p[1] != '\\' || p[2] != 'u' || !read_u4(p + 3, end, &lo) ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    return false;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return false;
            }
            put_utf8(out, cp);
            break;
        }
        default: return false;
        }
    }
    return false;
}

bool tasker_json_field(tasker_str_t object, const char *key, tasker_str_t *value) {
    const char *p = object.ptr, *end = object.ptr + object.len;
    p = skip_ws(p, end);
    if (p >= end || *p != '{') return false;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') return false;
    tasker_buf_t k = {0};
    bool found = false;
    while (p < end && *p == '"') {
        const char *kend = skip_string(p, end);
        if (!kend || !tasker_json_string((tasker_str_t){p, (size_t)(kend - p)}, &k)) break;
        p = skip_ws(kend, end);
        if (p >= end || *p != ':') break;
        const char *vstart = skip_ws(p + 1, end);
        const char *vend = skip_value(vstart, end);
        if (!vend) break;
        if (strlen(key) == k.len && memcmp(k.ptr, key, k.len) == 0) {
            *value = (tasker_str_t){vstart, (size_t)(vend - vstart)};
            found = true;
            break;
        }
        p = skip_ws(vend, end);
        if (p < end && *p == ',') {
            p = skip_ws(p + 1, end);
            continue;
        }
        break;
    }
    tasker_buf_free(&k);
    return found;
}

bool tasker_json_u64(tasker_str_t value, uint64_t *out) {
    const char *p = skip_ws(value.ptr, value.ptr + value.len), *end = value.ptr + value.len;
    if (p >= end || *p < '0' || *p > '9') return false;
    uint64_t v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (skip_ws(p, end) != end) return false;
    *out = v;
    return true;
}

bool tasker_parent(const tasker_ctx_t *ctx, const char *step, tasker_str_t *result) {
    size_t n = strlen(step);
    for (size_t i = 0; i < ctx->parent_count; i++) {
        if (ctx->parent_names[i].len == n && memcmp(ctx->parent_names[i].ptr, step, n) == 0) {
            *result = ctx->parent_results[i];
            return true;
        }
    }
    return false;
}

/* ---- host interface ---- */

void tasker_log(tasker_level_t level, const char *fmt, ...) {
    tasker_buf_t b = {0};
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (!b.oom) {
        step_handler_string_t msg = {(uint8_t *)b.ptr, b.len};
        tasker_plugin_host_log((tasker_plugin_host_log_level_t)level, &msg);
    }
    tasker_buf_free(&b);
}

void tasker_emit(const char *name, const char *json_payload) {
    step_handler_string_t n = {(uint8_t *)name, strlen(name)};
    tasker_plugin_host_json_t p = {(uint8_t *)json_payload, strlen(json_payload)};
    tasker_plugin_host_emit_event(&n, &p);
}

/* ---- the export ---- */

static tasker_str_t str_of(step_handler_string_t s) { return (tasker_str_t){(const char *)s.ptr, s.len}; }

/* Both strings handed back are malloc'd: the generated post-return frees them. */
static void set_message(step_handler_string_t *dst, tasker_buf_t *msg, const char *fallback) {
    if (msg->oom || !msg->ptr) {
        tasker_buf_free(msg);
        step_handler_string_dup(dst, fallback);
        return;
    }
    dst->ptr = (uint8_t *)msg->ptr;
    dst->len = msg->len;
    *msg = (tasker_buf_t){0};
}

bool exports_step_handler_handle(step_handler_step_context_t *raw, step_handler_json_t *ret,
                                 step_handler_step_error_t *err) {
    size_t n = raw->parent_results.len;
    tasker_str_t *names = calloc(n ? n : 1, sizeof *names);
    tasker_str_t *results = calloc(n ? n : 1, sizeof *results);
    if (!names || !results) abort(); /* out of memory before the handler ran */
    for (size_t i = 0; i < n; i++) {
        names[i] = str_of(raw->parent_results.ptr[i].f0);
        results[i] = str_of(raw->parent_results.ptr[i].f1);
    }
    tasker_ctx_t ctx = {
        .task_id = str_of(raw->task_id),
        .step_name = str_of(raw->step_name),
        .attempt = raw->attempt,
        .context = str_of(raw->context),
        .config = str_of(raw->config),
        .parent_count = n,
        .parent_names = names,
        .parent_results = results,
    };
    tasker_buf_t out = {0};
    tasker_error_t e = {.permanent = true, .retry_after_ms = -1};
    bool ok = tasker_handle(&ctx, &out, &e);
    if (ok && out.oom) {
        /* The result could not be built: the memory cap (if that was it) is reported by
         * the host; a bare allocation failure is a retryable error. */
        ok = tasker_retryable(&e, -1, "out of memory building the result");
    }
    if (ok && out.len == 0) {
        ok = tasker_permanent(&e, "the handler returned true but wrote no JSON");
    }
    free(names);
    free(results);
    step_handler_step_context_free(raw);
    if (ok) {
        ret->ptr = (uint8_t *)out.ptr;
        ret->len = out.len;
        return true;
    }
    tasker_buf_free(&out);
    if (e.permanent) {
        err->tag = TASKER_PLUGIN_TYPES_STEP_ERROR_PERMANENT;
        set_message(&err->val.permanent, &e.message, "handler failed (no message)");
    } else {
        err->tag = TASKER_PLUGIN_TYPES_STEP_ERROR_RETRYABLE;
        set_message(&err->val.retryable.message, &e.message, "handler failed (no message)");
        err->val.retryable.retry_after_ms.is_some = e.retry_after_ms >= 0;
        err->val.retryable.retry_after_ms.val = e.retry_after_ms >= 0 ? (uint64_t)e.retry_after_ms : 0;
    }
    return false;
}
