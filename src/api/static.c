/* Static files for people: the demo chat (/), the dashboard (/dashboard), their assets
 * (/static/<name>) and the JavaScript client (/clients/js/<name>). Each file is read once
 * from --web-dir / --client-dir and then served from memory; names are single path
 * segments of [A-Za-z0-9._-], never "..", so nothing outside those folders is reachable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/log.h"

typedef struct ac__static_s {
    struct ac__static_s *next;
    char *key; /* dir "/" name */
    char *data;
    size_t len;
    const char *type;
} static_t;

static const char *content_type(const char *name)
{
    const char *dot = strrchr(name, '.');
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".ts", "text/plain; charset=utf-8"},
        {".md", "text/plain; charset=utf-8"},
        {".txt", "text/plain; charset=utf-8"},
    };

    for (size_t i = 0; dot != NULL && i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    }
    return "application/octet-stream";
}

static int name_ok(const char *p, size_t n)
{
    if (n == 0 || n > 128 || p[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static static_t *load(ac_server_t *s, const char *dir, const char *name, size_t nlen)
{
    char path[1200];
    FILE *f;
    static_t *st;
    long size;

    snprintf(path, sizeof(path), "%s/%.*s", dir, (int)nlen, name);
    for (st = s->statics; st != NULL; st = st->next) {
        if (strcmp(st->key, path) == 0)
            return st;
    }
    f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    st = calloc(1, sizeof(*st));
    if (st == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 || size > (8 << 20) ||
        fseek(f, 0, SEEK_SET) != 0)
        goto fail;
    st->len = (size_t)size;
    st->data = malloc(st->len + 1);
    st->key = strdup(path);
    if (st->data == NULL || st->key == NULL || fread(st->data, 1, st->len, f) != st->len)
        goto fail;
    fclose(f);
    st->type = content_type(path);
    st->next = s->statics;
    s->statics = st;
    return st;

fail:
    fclose(f);
    if (st != NULL) {
        free(st->data);
        free(st->key);
        free(st);
    }
    return NULL;
}

void ac__api_static(ac__conn_t *c, const ac__http_req_t *req, const char *dir, const char *name,
                    size_t nlen)
{
    ac_server_t *s = ac__conn_server(c);
    static_t *st;

    if (dir == NULL || !name_ok(name, nlen) || (st = load(s, dir, name, nlen)) == NULL) {
        ac__conn_respond_error(c, 404, "not found", NULL);
        return;
    }
    if (req->method == HTTP_HEAD) {
        /* The headers GET would send (Content-Length included), without the body. */
        ac__buf_t *b = ac__http_response(200, st->type, "", st->data, st->len, req->keep_alive);
        if (b == NULL) {
            ac__conn_destroy(c);
            return;
        }
        b->len -= (uint32_t)st->len;
        ac__conn_send_control(c, b);
        ac__buf_unref(b);
        if (!req->keep_alive)
            ac__conn_end(c);
        return;
    }
    ac__conn_respond(c, 200, st->type, st->data, st->len, NULL, req->keep_alive);
}

void ac__api_static_free(ac_server_t *s)
{
    while (s->statics != NULL) {
        static_t *st = s->statics;
        s->statics = st->next;
        free(st->data);
        free(st->key);
        free(st);
    }
}
