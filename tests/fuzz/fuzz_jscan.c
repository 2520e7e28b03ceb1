/* libFuzzer target: the publish path's JSON scanner (src/core/jscan.h), differential against
 * jansson. Whatever the scanner accepts as one whole value, jansson must accept with the
 * same meaning: same kind, same keys and raw strings where the scanner says there were no
 * escapes, same numbers; and ac__json_compact() of it must parse to an equal value. Inputs
 * jansson accepts and the scanner does not are fine (the scanner may be unsure). */

/* Input: the bytes are the JSON text, whole (no mode byte). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "agentcast.h"
#include "core/jscan.h"

#define FUZZ_NAME "fuzz_jscan"
#include "fuzz_common.h"

/* How the publish path calls jansson, taking any value at the top as the scanner does. */
#define JFLAGS (JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL | JSON_DECODE_ANY)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs(AC_LOG_ERROR);
    return 0;
}

/* A scalar's text [start, end) against jansson's value for it. */
static void check_scalar(const json_t *v, int kind, const char *start, const char *end, int esc)
{
    size_t n = (size_t)(end - start);

    check(kind == ac__json_kind(v), "scalar kind differs from jansson's");
    if (kind == AC__J_STRING && !esc) {
        /* Unescaped, the text between the quotes is the string as published. */
        check(n >= 2 && start[0] == '"' && end[-1] == '"', "string span without its quotes");
        check(json_string_length(v) == n - 2 && memcmp(json_string_value(v), start + 1, n - 2) == 0,
              "unescaped string differs from jansson's");
    } else if (kind == AC__J_NUMBER) {
        char num[512];
        check(n > 0 && n < sizeof(num), "number span length");
        memcpy(num, start, n);
        num[n] = '\0';
        char *e;
        if (json_is_integer(v)) {
            check(strtoll(num, &e, 10) == json_integer_value(v) && e == num + n,
                  "integer differs from jansson's");
        } else {
            check(strtod(num, &e) == json_real_value(v) && e == num + n,
                  "real differs from jansson's");
        }
    }
}

/* Walks the value at j with the member and element calls, as publish.c reads bodies, in
 * step with jansson's tree `v` of the same text: raw keys must be jansson's keys. */
static void walk(ac__jscan_t *j, const json_t *v)
{
    int c = ac__jscan_peek(j), r, kind;
    const char *start;

    if (c == '{') {
        ac__jobj_t o;
        const char *key;
        size_t klen, n = 0;
        check(json_is_object(v), "object where jansson has no object");
        ac__jscan_object(j, &o);
        while ((r = ac__jscan_member(j, &o, &key, &klen)) == 1) {
            const json_t *m = json_object_getn(v, key, klen);
            check(m != NULL, "a raw key is not among jansson's keys");
            walk(j, m);
            n++;
        }
        check(r == 0, "object accepted whole but not member by member");
        check(n == json_object_size(v), "member count differs from jansson's");
    } else if (c == '[') {
        int first;
        size_t n = 0;
        check(json_is_array(v), "array where jansson has no array");
        ac__jscan_array(j, &first);
        while ((r = ac__jscan_element(j, &first)) == 1) {
            const json_t *e = json_array_get(v, n++);
            check(e != NULL, "more elements than jansson's array");
            walk(j, e);
        }
        check(r == 0, "array accepted whole but not element by element");
        check(n == json_array_size(v), "element count differs from jansson's");
    } else {
        check(ac__jscan_value(j, &kind, &start) == 0, "scalar accepted whole but not alone");
        check_scalar(v, kind, start, j->p, (int)j->esc);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = dup_exact(data, size);
    ac__jscan_t j;
    const char *start = NULL;
    int kind = 0;

    ac__jscan_init(&j, buf, size);
    int r = ac__jscan_value(&j, &kind, &start);
    if (r == 0)
        r = ac__jscan_finish(&j);
    check(r == 0 || r == -1, "scanner answered other than 0 or -1");
    if (r != 0) {
        free(buf);
        return 0;
    }
    unsigned ws = j.ws;

    /* Accepted whole: the span is the value, only whitespace around it. */
    check(start >= buf && start < buf + size, "value start outside the input");
    check(j.depth == 0, "depth not back to 0 after a value");
    for (const char *p = buf; p < start; p++)
        check(*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r', "non-space before the value");

    json_error_t err;
    json_t *v = json_loadb(buf, size, JFLAGS, &err);
    if (v == NULL) {
        fprintf(stderr,
                FUZZ_NAME ": jansson rejects what the scanner accepted: %s (line %d "
                          "column %d position %d)\n",
                err.text, err.line, err.column, err.position);
        check(0, "scanner accepted what jansson rejects");
    }
    check(kind == ac__json_kind(v), "value kind differs from jansson's");

    /* The same text read member by member and element by element. */
    ac__jscan_t w;
    ac__jscan_init(&w, buf, size);
    walk(&w, v);
    check(ac__jscan_finish(&w) == 0, "walk ended before the end");
    check(w.ws == ws, "walk saw whitespace differently");

    /* Compacted, it means the same, and the scanner accepts it without whitespace. */
    char *out = malloc(size);
    check(out != NULL, "malloc");
    size_t n = ac__json_compact(out, buf, size);
    check(n <= size, "compact wrote more than it read");
    if (!ws)
        check(n == size && memcmp(out, buf, size) == 0, "compact changed text without whitespace");
    else
        check(n < size, "compact removed nothing from text with whitespace");
    char *cbuf = dup_exact(out, n);
    json_t *cv = json_loadb(cbuf, n, JFLAGS, &err);
    if (cv == NULL) {
        fprintf(stderr, FUZZ_NAME ": jansson rejects the compacted text: %s (position %d)\n",
                err.text, err.position);
        check(0, "compacted text is not JSON");
    }
    check(json_equal(v, cv), "compacted text means something else");
    ac__jscan_t cj;
    const char *cstart;
    int ckind;
    ac__jscan_init(&cj, cbuf, n);
    check(ac__jscan_value(&cj, &ckind, &cstart) == 0 && ac__jscan_finish(&cj) == 0,
          "scanner rejects the compacted text");
    check(ckind == kind && cstart == cbuf && cj.ws == 0, "compacted text scans differently");

    json_decref(cv);
    json_decref(v);
    free(cbuf);
    free(out);
    free(buf);
    return 0;
}
