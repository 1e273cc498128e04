// OpenSSL 3 (Debian libssl-dev): key derivation and randomness for credentials, and
// TLS through memory BIOs (the ring does the socket I/O). Macros Swift cannot call
// are wrapped as static inlines here.
#ifndef PILEGATE_COPENSSL_H
#define PILEGATE_COPENSSL_H
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>

static inline long cssl_ctx_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline int cssl_ctx_set_min_tls12(SSL_CTX *ctx) { return (int)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION); }
static inline int cssl_ctx_set_session_cache_size(SSL_CTX *ctx, long n) { return (int)SSL_CTX_sess_set_cache_size(ctx, n); }
#endif
