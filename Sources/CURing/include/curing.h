// Thin shim over liburing 2.3: what Swift cannot import (macros over enum bits,
// iteration macros) and what 2.3 predates (bind, socket setsockopt commands).
#ifndef PILEGATE_CURING_H
#define PILEGATE_CURING_H

// System headers first: liburing.h defines _XOPEN_SOURCE before its own includes,
// which would give fd_set a different shape here than in Swift's Glibc module.
#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdint.h>
#include <liburing.h>

// IOSQE_* are macros over enum bit positions: Swift cannot see them.
extern const uint8_t CUR_IOSQE_FIXED_FILE;
extern const uint8_t CUR_IOSQE_IO_LINK;
extern const uint8_t CUR_IOSQE_IO_HARDLINK;
extern const uint8_t CUR_IOSQE_BUFFER_SELECT;

// Provided-buffer ring: liburing 2.3 has no io_uring_setup_buf_ring.
// Allocates page-aligned ring memory for `entries` (power of two) and registers
// it as buffer group `bgid`. Returns NULL and sets *err (negative errno) on failure.
struct io_uring_buf_ring *cur_setup_buf_ring(struct io_uring *ring, unsigned entries,
                                             int bgid, int *err);
void cur_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br,
                       unsigned entries, int bgid);

// IORING_OP_BIND (kernel 6.11), not in liburing 2.3.
void cur_prep_bind(struct io_uring_sqe *sqe, int fd, const struct sockaddr *addr,
                   socklen_t addrlen);

// setsockopt through IORING_OP_URING_CMD / SOCKET_URING_OP_SETSOCKOPT (kernel 6.7):
// the only way to set an option on a direct descriptor, which has no process fd.
void cur_prep_setsockopt(struct io_uring_sqe *sqe, int fd, int level, int optname,
                         const void *optval, int optlen);

// Name the calling thread (shows in top -H, perf).
void cur_set_thread_name(const char *name);

int cur_eventfd(void);

#define CUR_OP_BIND 56
#endif
