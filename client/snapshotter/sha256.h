/* SHA-256 (FIPS 180-4) of a byte string, for the snapshotter's volume names: small
 * enough to keep the client free of a crypto library for one hash of a short string. */
#ifndef TP_SNAPSHOTTER_SHA256_H
#define TP_SNAPSHOTTER_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_DIGEST_SIZE 32

/* The digest of the LEN bytes at DATA into DIGEST. */
void sha256(const void *data, size_t len, uint8_t digest[SHA256_DIGEST_SIZE]);

#endif
