/* Polyglot example, step `checksum` (C): CRC-32 and an amount histogram over the
 * canonical payload of the Python `normalise` step: one line per record,
 * "id,email,country,amount_cents,date\n".
 *
 * Config: `bucket_cents` (histogram bucket width, default 10000), `max_buckets` (default
 * 32; larger amounts land in the last bucket).
 * Output: {"crc32": "<8 hex>", "bytes": n, "lines": n, "bucket_cents": n, "histogram": [..]}. */
#include <stdlib.h>
#include <string.h>

#include "tasker.h"

/* CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), table-driven. */
static uint32_t crc32(const unsigned char *p, size_t n) {
    static uint32_t table[256];
    static bool ready = false;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = true;
    }
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    return crc ^ 0xFFFFFFFFu;
}

static bool config_u64(const tasker_ctx_t *ctx, const char *key, uint64_t dflt, uint64_t *out,
                       tasker_error_t *err) {
    tasker_str_t v;
    *out = dflt;
    if (!tasker_json_field(ctx->config, key, &v)) return true;
    if (!tasker_json_u64(v, out) || *out == 0)
        return tasker_permanent(err, "config field `%s` must be a positive integer", key);
    return true;
}

bool tasker_handle(const tasker_ctx_t *ctx, tasker_buf_t *out, tasker_error_t *err) {
    uint64_t bucket, max_buckets;
    if (!config_u64(ctx, "bucket_cents", 10000, &bucket, err)) return false;
    if (!config_u64(ctx, "max_buckets", 32, &max_buckets, err)) return false;
    if (max_buckets > 4096) return tasker_permanent(err, "config field `max_buckets` is over 4096");

    tasker_str_t parent, field;
    if (!tasker_parent(ctx, "normalise", &parent))
        return tasker_permanent(err, "no result from parent step `normalise`");
    if (!tasker_json_field(parent, "canonical", &field))
        return tasker_permanent(err, "parent `normalise` has no `canonical` field");
    tasker_buf_t payload = {0};
    if (!tasker_json_string(field, &payload))
        return tasker_permanent(err, "parent `normalise`: `canonical` is not a JSON string");

    uint64_t *hist = calloc(max_buckets, sizeof *hist);
    if (!hist) return tasker_retryable(err, -1, "out of memory");
    uint64_t lines = 0, used = 0;
    const char *p = payload.ptr, *end = payload.ptr + payload.len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        lines++;
        /* The fourth comma-separated field is the amount in cents. */
        const char *f = p;
        for (int i = 0; i < 3 && f; i++) {
            f = memchr(f, ',', (size_t)(eol - f));
            if (f) f++;
        }
        const char *fend = f ? memchr(f, ',', (size_t)(eol - f)) : NULL;
        uint64_t amount;
        if (!f || !fend || !tasker_json_u64((tasker_str_t){f, (size_t)(fend - f)}, &amount)) {
            free(hist);
            return tasker_permanent(err, "payload line %llu has no amount in its 4th field",
                                    (unsigned long long)lines);
        }
        uint64_t idx = amount / bucket;
        if (idx >= max_buckets) idx = max_buckets - 1;
        hist[idx]++;
        if (idx + 1 > used) used = idx + 1;
        p = eol + 1;
    }

    tasker_buf_printf(out, "{\"crc32\":\"%08x\",\"bytes\":%zu,\"lines\":%llu,\"bucket_cents\":%llu,\"histogram\":[",
                      crc32((const unsigned char *)payload.ptr, payload.len), payload.len,
                      (unsigned long long)lines, (unsigned long long)bucket);
    for (uint64_t i = 0; i < used; i++)
        tasker_buf_printf(out, "%s%llu", i ? "," : "", (unsigned long long)hist[i]);
    tasker_buf_puts(out, "]}");
    tasker_log(TASKER_INFO, "checksummed %zu bytes, %llu lines", payload.len, (unsigned long long)lines);
    free(hist);
    tasker_buf_free(&payload);
    return true;
}
