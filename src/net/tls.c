/* OpenSSL setup: one context per server, one session per connection over memory BIOs.
 * The record layer is driven from conn.c (read: BIO_write then SSL_read; write:
 * SSL_write then BIO_read into the output queue). */
#include <openssl/err.h>

#include "net/tls.h"

SSL_CTX *ac__tls_ctx_new(const char *cert_file, const char *key_file, const char **why)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL) {
        *why = "cannot create a TLS context";
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Idle connections give their record buffers back: most sockets are idle. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        *why = "cannot load --tls-cert (PEM certificate chain)";
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        *why = "cannot load --tls-key (PEM private key)";
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        *why = "--tls-key does not match --tls-cert";
        goto fail;
    }
    return ctx;

fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

SSL *ac__tls_session_new(SSL_CTX *ctx)
{
    SSL *ssl = SSL_new(ctx);
    BIO *rbio, *wbio;

    if (ssl == NULL)
        return NULL;
    rbio = BIO_new(BIO_s_mem());
    wbio = BIO_new(BIO_s_mem());
    if (rbio == NULL || wbio == NULL) {
        BIO_free(rbio);
        BIO_free(wbio);
        SSL_free(ssl);
        return NULL;
    }
    /* An empty read BIO means "more to come", not end of stream. */
    BIO_set_mem_eof_return(rbio, -1);
    BIO_set_mem_eof_return(wbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_accept_state(ssl);
    return ssl;
}

int ac__tls_ctx_reload(SSL_CTX **ctx, const char *cert_file, const char *key_file, const char **why)
{
    SSL_CTX *fresh = ac__tls_ctx_new(cert_file, key_file, why);

    if (fresh == NULL)
        return -1;
    /* Open sessions hold their own reference to the old context (SSL_new): they keep it
     * until they close. */
    SSL_CTX_free(*ctx);
    *ctx = fresh;
    return 0;
}
