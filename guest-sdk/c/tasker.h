/* Write a Tasker step handler in C.
 *
 * Implement one function; tasker.c turns it into the component's `handle` export (the
 * bindings, step_handler.h, are generated from wit/ by `wit-bindgen c` at build time):
 *
 *     #include "tasker.h"
 *
 *     bool tasker_handle(const tasker_ctx_t *ctx, tasker_buf_t *out, tasker_error_t *err) {
 *         tasker_str_t name;
 *         if (!tasker_json_field(ctx->config, "name", &name))
 *             return tasker_permanent(err, "config field `name` is missing");
 *         tasker_buf_puts(out, "{\"greeting\":");
 *         tasker_buf_raw(out, name.ptr, name.len);       // already JSON
 *         tasker_buf_puts(out, "}");
 *         return true;                                    // `out` must hold one JSON value
 *     }
 *
 * Return true with JSON in `out`, or false after tasker_permanent / tasker_retryable. A
 * buffer whose allocation failed makes the attempt fail (the host reports out_of_memory
 * when the cause was the memory cap). Each attempt runs in a fresh instance: memory that is
 * not freed is reclaimed with it.
 */
#ifndef TASKER_H
#define TASKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A byte string that is not NUL-terminated (WIT strings are not). */
typedef struct {
    const char *ptr;
    size_t len;
} tasker_str_t;

/* A growable byte buffer (NUL-terminated for convenience). `oom` is set when an
 * allocation failed; later appends are ignored. Zero-initialise it: `tasker_buf_t b = {0};` */
typedef struct {
    char *ptr;
    size_t len, cap;
    bool oom;
} tasker_buf_t;

/* What one attempt sees. JSON fields are text: read them with tasker_json_*. */
typedef struct {
    tasker_str_t task_id;
    tasker_str_t step_name;
    uint32_t attempt; /* 1 for the first attempt */
    tasker_str_t context;
    tasker_str_t config;
    size_t parent_count;
    const tasker_str_t *parent_names;
    const tasker_str_t *parent_results;
} tasker_ctx_t;

/* The handler's own failure. Fill it with tasker_permanent / tasker_retryable. */
typedef struct {
    bool permanent;
    int64_t retry_after_ms; /* < 0: none */
    tasker_buf_t message;
} tasker_error_t;

/* The one function a handler implements. */
bool tasker_handle(const tasker_ctx_t *ctx, tasker_buf_t *out, tasker_error_t *err);

/* Errors: return these from tasker_handle (they return false). printf-style messages. */
bool tasker_permanent(tasker_error_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
bool tasker_retryable(tasker_error_t *err, int64_t retry_after_ms, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A parent's result (JSON text); false if the step has no such parent. */
bool tasker_parent(const tasker_ctx_t *ctx, const char *step, tasker_str_t *result);

/* JSON reading, enough for handler inputs:
 * - tasker_json_field: the raw text of a top-level field of a JSON object;
 * - tasker_json_string: decode a JSON string value (escapes, \u surrogates) into `out`;
 * - tasker_json_u64: a non-negative integer value.
 * Each returns false on malformed input or a missing field. */
bool tasker_json_field(tasker_str_t object, const char *key, tasker_str_t *value);
bool tasker_json_string(tasker_str_t value, tasker_buf_t *out);
bool tasker_json_u64(tasker_str_t value, uint64_t *out);

/* Buffers and JSON writing. */
void tasker_buf_raw(tasker_buf_t *b, const char *s, size_t n);
void tasker_buf_puts(tasker_buf_t *b, const char *s);
void tasker_buf_printf(tasker_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tasker_buf_json_string(tasker_buf_t *b, const char *s, size_t n); /* quoted, escaped */
void tasker_buf_free(tasker_buf_t *b);

/* Host interface. */
typedef enum {
    TASKER_TRACE = 0,
    TASKER_DEBUG = 1,
    TASKER_INFO = 2,
    TASKER_WARN = 3,
    TASKER_ERROR = 4,
} tasker_level_t;

void tasker_log(tasker_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A custom event (`custom.<name>`) with a JSON payload. */
void tasker_emit(const char *name, const char *json_payload);

#endif
