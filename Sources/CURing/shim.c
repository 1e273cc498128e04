#define _GNU_SOURCE
#include "curing.h"
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>

const uint8_t CUR_IOSQE_FIXED_FILE = IOSQE_FIXED_FILE;
const uint8_t CUR_IOSQE_IO_LINK = IOSQE_IO_LINK;
const uint8_t CUR_IOSQE_IO_HARDLINK = IOSQE_IO_HARDLINK;
const uint8_t CUR_IOSQE_BUFFER_SELECT = IOSQE_BUFFER_SELECT;

struct io_uring_buf_ring *cur_setup_buf_ring(struct io_uring *ring, unsigned entries,
                                             int bgid, int *err) {
    size_t size = entries * sizeof(struct io_uring_buf);
    void *mem = NULL;
    long page = sysconf(_SC_PAGESIZE);
    if (posix_memalign(&mem, (size_t)page, size) != 0) {
        *err = -ENOMEM;
        return NULL;
    }
    memset(mem, 0, size);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)mem;
    reg.ring_entries = entries;
    reg.bgid = (unsigned short)bgid;
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret != 0) {
        free(mem);
        *err = ret;
        return NULL;
    }
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    *err = 0;
    return br;
}

void cur_free_buf_ring(struct io_uring *ring, struct io_uring_buf_ring *br,
                       unsigned entries, int bgid) {
    (void)entries;
    io_uring_unregister_buf_ring(ring, bgid);
    free(br);
}

void cur_prep_bind(struct io_uring_sqe *sqe, int fd, const struct sockaddr *addr,
                   socklen_t addrlen) {
    io_uring_prep_rw(CUR_OP_BIND, sqe, fd, addr, 0, addrlen);
}

void cur_prep_setsockopt(struct io_uring_sqe *sqe, int fd, int level, int optname,
                         const void *optval, int optlen) {
    // Layout from the kernel uapi (6.7+): cmd_op in the low half of `off`,
    // level/optname in `addr`, optlen in `file_index`, optval in `addr3`.
    io_uring_prep_rw(IORING_OP_URING_CMD, sqe, fd, NULL, 0, 0);
    uint32_t *off = (uint32_t *)&sqe->off;
    off[0] = 3; /* SOCKET_URING_OP_SETSOCKOPT */
    off[1] = 0;
    uint32_t *addr = (uint32_t *)&sqe->addr;
    addr[0] = (uint32_t)level;
    addr[1] = (uint32_t)optname;
    sqe->file_index = (uint32_t)optlen;
    sqe->addr3 = (uint64_t)(uintptr_t)optval;
}


void cur_set_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

int cur_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC);
}
