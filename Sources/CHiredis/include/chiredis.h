// hiredis 0.14 (Debian libhiredis-dev), used only for its RESP reply reader: the
// socket I/O runs on pilegate's own rings and commands are written as RESP directly.
#ifndef PILEGATE_CHIREDIS_H
#define PILEGATE_CHIREDIS_H
#include <stddef.h>
#include <hiredis/hiredis.h>

// REDIS_OK / REDIS_REPLY_* are macros: exported as constants for Swift.
extern const int CHR_OK;
extern const int CHR_REPLY_STRING;
extern const int CHR_REPLY_ARRAY;
extern const int CHR_REPLY_INTEGER;
extern const int CHR_REPLY_NIL;
extern const int CHR_REPLY_STATUS;
extern const int CHR_REPLY_ERROR;
#endif
