/* TLS for wss:// and https:// through OpenSSL with memory BIOs: libuv moves the
 * ciphertext, OpenSSL never touches a socket. Only conn.c uses this. */
#ifndef AC_NET_TLS_H
#define AC_NET_TLS_H

#include <openssl/ssl.h>

/* A server context (TLS 1.2 or newer) from PEM files. NULL with *why set on failure. */
SSL_CTX *ac__tls_ctx_new(const char *cert_file, const char *key_file, const char **why);

/* A server-side session on two fresh memory BIOs; NULL when out of memory. */
SSL *ac__tls_session_new(SSL_CTX *ctx);

/* Replaces *ctx with a context loaded from the files (SIGHUP): new handshakes use it, open
 * connections keep theirs. 0, or -1 with *why set and *ctx unchanged. */
int ac__tls_ctx_reload(SSL_CTX **ctx, const char *cert_file, const char *key_file,
                       const char **why);

#endif
