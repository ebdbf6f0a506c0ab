/*
 * fuzz_net.h — for targets that drive a real server on loopback (header
 * only): fz_exchange connects to 127.0.0.1:port, sends the bytes while
 * draining whatever the server answers (so neither side blocks on a full
 * socket buffer), half-closes, and reads until the server closes or a
 * deadline passes. The socket is closed with SO_LINGER 0 so that
 * thousands of runs a second leave no TIME_WAIT behind.
 */
#ifndef ARBOR_FUZZ_NET_H
#define ARBOR_FUZZ_NET_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include "fuzz_common.h"

static inline int64_t fz_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the number of bytes the server sent (0 if it sent nothing);
 * -1 if the server did not close within timeout_ms after the input ended. */
static inline long fz_exchange(int port, const uint8_t *data, size_t size, int timeout_ms)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    CHECK(fd >= 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A burst of short connections can briefly exhaust a queue or a port
     * range on a busy machine: retry for up to 2 s, then fail loudly. */
    for (int tries = 0; connect(fd, (struct sockaddr *)&a, sizeof a) != 0; tries++) {
        if (tries == 200) {
            fprintf(stderr, "fuzz_net: connect to port %d: %s\n", port, strerror(errno));
            abort();
        }
        close(fd);
        usleep(10000);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(fd >= 0);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    CHECK(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);

    size_t sent = 0;
    long got = 0;
    int wr_open = 1;
    int64_t deadline = fz_now_ms() + timeout_ms;
    static char sink[65536];
    for (;;) {
        if (wr_open && sent == size) {
            shutdown(fd, SHUT_WR);
            wr_open = 0;
        }
        struct pollfd p = { fd, (short)(POLLIN | (wr_open ? POLLOUT : 0)), 0 };
        int64_t left = deadline - fz_now_ms();
        if (left <= 0) {
            got = -1;
            break;
        }
        if (poll(&p, 1, (int)left) < 0) {
            CHECK(errno == EINTR);
            continue;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(fd, sink, sizeof sink, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break;  /* the server closed (or reset) */
            if (n > 0)
                got += n;
        }
        if (wr_open && (p.revents & POLLOUT)) {
            ssize_t n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                wr_open = 0;  /* the server closed while we wrote: fine */
        }
    }
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
    return got;
}

#endif
