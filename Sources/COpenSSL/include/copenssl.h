// OpenSSL 3 (Debian libssl-dev): key derivation and randomness for credentials
// (TLS through memory BIOs comes with the TLS listener).
#ifndef PILEGATE_COPENSSL_H
#define PILEGATE_COPENSSL_H
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/crypto.h>
#endif
