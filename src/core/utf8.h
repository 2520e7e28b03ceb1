/* UTF-8 validity as RFC 3629 defines it: no overlong forms, no surrogates, nothing above
 * U+10FFFF. Pure functions; no I/O. */
#ifndef AC_CORE_UTF8_H
#define AC_CORE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Incremental validation. Start with *state = 0 for each message. Returns 0 while the bytes
 * so far are a valid prefix, -1 on the first invalid byte. At the end of the message
 * *state must be 0 again, else the text was truncated inside a character. */
int ac__utf8_validate(uint32_t *state, const uint8_t *p, size_t n);

/* The length (1..4) of the valid character that starts at p[0] within p[0..n), or 0 when
 * there is none there (invalid or truncated). */
size_t ac__utf8_char_len(const uint8_t *p, size_t n);

#endif
