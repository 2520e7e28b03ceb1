/* A validating JSON scanner for the publish path: no tree, no allocation. It reads a body
 * in place and says where each value's text is, so an event's data can be copied into its
 * envelope as published. It is deliberately unsure of what is rare (escaped keys, numbers
 * with exponents or past 18 digits, nesting past 32, objects past 32 keys): it answers -1
 * there, as for invalid input, and the caller parses with jansson instead, which then
 * gives the precise error. Whatever it accepts, jansson accepts with the same meaning
 * (tests/fuzz/fuzz_jscan.c checks exactly that). */
#ifndef AC_CORE_JSCAN_H
#define AC_CORE_JSCAN_H

#include <stddef.h>
#include <jansson.h>

enum {
    AC__J_OBJECT = 1,
    AC__J_ARRAY,
    AC__J_STRING,
    AC__J_NUMBER,
    AC__J_TRUE,
    AC__J_FALSE,
    AC__J_NULL
};

#define AC__JSCAN_MAX_DEPTH 32
#define AC__JSCAN_MAX_KEYS 32

typedef struct ac__jscan_s {
    const char *p;   /* the next byte */
    const char *end; /* one past the last */
    unsigned depth;  /* containers open inside ac__jscan_value */
    unsigned ws;     /* set when whitespace was skipped (the caller clears it) */
    unsigned esc;    /* the last string scanned had escapes */
} ac__jscan_t;

/* An object read member by member: its keys so far, for the duplicate check. */
typedef struct ac__jobj_s {
    unsigned n;
    struct {
        const char *p;
        size_t len;
    } keys[AC__JSCAN_MAX_KEYS];
} ac__jobj_t;

void ac__jscan_init(ac__jscan_t *j, const char *p, size_t len);

int ac__jscan_skip_ws(ac__jscan_t *j);

/* Skips whitespace (setting j->ws when there was any); the next byte, or -1 at the end.
 * Whitespace is rare between tokens: the common case is one compare, inline. */
static inline int ac__jscan_peek(ac__jscan_t *j)
{
    if (j->p < j->end && (unsigned char)*j->p > ' ')
        return (unsigned char)*j->p;
    return ac__jscan_skip_ws(j);
}

/* Consumes the '{' ahead (after ac__jscan_peek said so) and starts `o`. */
void ac__jscan_object(ac__jscan_t *j, ac__jobj_t *o);

/* The next member of `o`: 1 with its key (the raw text between the quotes; keys with
 * escapes or repeated are -1) and j at the value; 0 when the object ended ('}' consumed);
 * -1 unsure. */
int ac__jscan_member(ac__jscan_t *j, ac__jobj_t *o, const char **key, size_t *klen);

/* Consumes the '[' ahead (after ac__jscan_peek said so); *first = 1. */
void ac__jscan_array(ac__jscan_t *j, int *first);

/* The next element of an array: 1 with j at it, 0 when the array ended (']' consumed),
 * -1 unsure. */
int ac__jscan_element(ac__jscan_t *j, int *first);

/* One whole value: *kind is its AC__J_* kind and [*start, j->p) its text (a string's with
 * its quotes; j->esc says whether it had escapes). 0, or -1 unsure. */
int ac__jscan_value(ac__jscan_t *j, int *kind, const char **start);

/* 0 when only whitespace remains, else -1. */
int ac__jscan_finish(ac__jscan_t *j);

/* The AC__J_* kind of a jansson value. */
int ac__json_kind(const json_t *v);

/* Copies `len` bytes of JSON the scanner accepted to `dst` without the whitespace between
 * tokens; returns the bytes written (at most `len`). */
size_t ac__json_compact(char *dst, const char *src, size_t len);

#endif
