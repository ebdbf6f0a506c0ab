/*
 * cli_proc — see cli_proc.h.
 */
#define _GNU_SOURCE
#include "http_client.h"
#include "cli_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli_cmd.h"
#include "clock.h"
#include "daemon.h"

void cli_sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

int cli_proc_start_ticks(pid_t pid, uint64_t *out)
{
    if (pid > 0)
        waitpid(pid, NULL, WNOHANG); /* our own child that died: reap it */
    return dmn_proc_start_ticks(pid, out);
}

bool cli_proc_alive(pid_t pid, uint64_t start_ticks)
{
    uint64_t t;
    return cli_proc_start_ticks(pid, &t) == 0 && t == start_ticks;
}

/* In the child: never returns. Reports an exec failure through errfd. */
static void child_exec(const char *bin, char *const argv[], const char *log_path,
                       int errfd)
{
    setsid();
    int in = open("/dev/null", O_RDONLY);
    int out = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(out, 2) < 0) {
        int e = errno;
        (void)!write(errfd, &e, sizeof(e));
        _exit(127);
    }
    /* Nothing of ours leaks into the daemon but the error pipe (CLOEXEC). */
    for (int fd = 3; fd < 1024; fd++) {
        if (fd != errfd) {
            close(fd);
        }
    }
    signal(SIGPIPE, SIG_DFL);
    execv(bin, argv);
    int e = errno;
    (void)!write(errfd, &e, sizeof(e));
    _exit(127);
}

int cli_proc_spawn(const char *bin, char *const argv[], const char *log_path,
                   pid_t *pid_out, uint64_t *start_ticks_out)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        cli_err("pipe: %s", strerror(errno));
        return CLI_EFAIL;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        cli_err("fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return CLI_EFAIL;
    }
    if (pid == 0) {
        close(pfd[0]);
        child_exec(bin, argv, log_path, pfd[1]);
    }
    close(pfd[1]);
    int e = 0;
    ssize_t n;
    do {
        n = read(pfd[0], &e, sizeof(e));
    } while (n < 0 && errno == EINTR);
    close(pfd[0]);
    if (n == (ssize_t)sizeof(e)) {
        waitpid(pid, NULL, 0);
        cli_err("cannot run %s: %s (set ARBOR_BIN_DIR to the directory of the "
                "arbor daemons)", bin, strerror(e));
        return CLI_EFAIL;
    }
    *pid_out = pid;
    if (cli_proc_start_ticks(pid, start_ticks_out) != 0) {
        cli_err("%s exited at once; see %s", bin, log_path);
        return CLI_EFAIL;
    }
    return 0;
}

static bool wait_gone(pid_t pid, uint64_t ticks, int timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;
    while (cli_proc_alive(pid, ticks)) {
        if (clock_mono_ms() >= end) {
            return false;
        }
        cli_sleep_ms(20);
    }
    return true;
}

int cli_proc_stop(pid_t pid, uint64_t start_ticks, int timeout_ms, const char *name)
{
    if (!cli_proc_alive(pid, start_ticks)) {
        return 0;
    }
    kill(pid, SIGTERM);
    if (wait_gone(pid, start_ticks, timeout_ms)) {
        return 0;
    }
    cli_note("%s (pid %d) did not stop within %d ms: killing it", name, (int)pid,
             timeout_ms);
    kill(pid, SIGKILL);
    if (wait_gone(pid, start_ticks, 5000)) {
        return 1;
    }
    cli_err("%s (pid %d) is still running after SIGKILL", name, (int)pid);
    return CLI_EFAIL;
}

/* Waits for fd to be ready for `events` until the deadline. */
static int wait_fd(int fd, short events, int64_t deadline_ms)
{
    for (;;) {
        int64_t left = deadline_ms - clock_mono_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = { .fd = fd, .events = events };
        int rc = poll(&p, 1, (int)left);
        if (rc > 0) {
            return 0;
        }
        if (rc < 0 && errno != EINTR) {
            return -errno;
        }
    }
}

int cli_http_probe(int port, const char *path, int timeout_ms)
{
    char err[256];
    int status = 0;
    return cli_http_request(port, "GET", path, NULL, NULL, timeout_ms, &status, NULL, err) == 0
               ? status
               : -EIO;
}

/* Connects a non-blocking socket to 127.0.0.1:port before the deadline:
 * the fd, or a negative errno. */
static int connect_loopback(int port, int64_t deadline)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        rc = -errno;
    } else if ((rc = wait_fd(fd, POLLOUT, deadline)) == 0) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        rc = -soerr;
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}

bool cli_tcp_probe(int port, int timeout_ms)
{
    int fd = connect_loopback(port, clock_mono_ms() + timeout_ms);
    if (fd < 0) {
        return false;
    }
    close(fd);
    return true;
}

int cli_http_request(int port, const char *method, const char *path, const char *body,
                     const char *bearer, int timeout_ms, int *status, char **resp,
                     char err[256])
{
    char url[512];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
    hc_req r = { .method = method, .url = url, .body = body,
                 .bearer = bearer && *bearer ? bearer : NULL, .timeout_ms = timeout_ms };
    return hc_request(&r, status, resp, err);
}
