/*
 * cli_test_common — see cli_test_common.h.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "cli_test_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"

ct_state ct;

/* ---- running commands ---------------------------------------------------- */

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        return strdup("");
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = 0;
    fclose(f);
    return buf;
}

static int sh_v(const char *fmt, va_list ap)
{
    vsnprintf(ct.cmd, sizeof(ct.cmd), fmt, ap);
    char out[400], err[400], full[9200];
    snprintf(out, sizeof(out), "%s/cmd.out", ct.root);
    snprintf(err, sizeof(err), "%s/cmd.err", ct.root);
    int n = snprintf(full, sizeof(full), "%s >%s 2>%s </dev/null", ct.cmd, out, err);
    assert_true(n > 0 && (size_t)n < sizeof(full));
    int st = system(full);
    free(ct.out);
    free(ct.err);
    ct.out = slurp(out);
    ct.err = slurp(err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int ct_sh(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sh_v(fmt, ap);
    va_end(ap);
    return rc;
}

int ct_arbor(const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return ct_sh("timeout -s KILL 180 %s --dir %s %s", ARBOR_CLI_BIN, ct.dir, args);
}

void ct_expect(int got, int want, const char *what)
{
    if (got != want) {
        fail_msg("%s: exit %d, expected %d\n$ %s\n--- stdout\n%s--- stderr\n%s", what, got,
                 want, ct.cmd, ct.out, ct.err);
    }
}

void ct_expect_in(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) {
        fail_msg("expected \"%s\" in the output of\n$ %s\n--- stdout\n%s--- stderr\n%s",
                 needle, ct.cmd, ct.out, ct.err);
    }
}

json_t *ct_parse_out(void)
{
    json_error_t e;
    json_t *j = json_loads(ct.out, 0, &e);
    if (!j) {
        /* the whole output can be megabytes: show where it broke */
        size_t at = (size_t)e.position, len = strlen(ct.out);
        size_t from = at > 300 ? at - 300 : 0;
        fail_msg("not JSON (%s, line %d column %d, byte %zu of %zu) from\n$ %s\n"
                 "%.1000s\n... around byte %zu:\n%.600s", e.text, e.line, e.column, at,
                 len, ct.cmd, ct.out, from, ct.out + (from < len ? from : len));
    }
    return j;
}

/* ---- cleanup watchdog --------------------------------------------------------- */

static int rm_entry(const char *p, const struct stat *s, int f, struct FTW *w)
{
    (void)s; (void)f; (void)w;
    remove(p);
    return 0;
}

bool ct_same_process(pid_t pid, uint64_t ticks)
{
    return dmn_proc_alive(pid, ticks);
}

void ct_kill_wait(pid_t pid, int sig, int step_ms)
{
    assert_int_equal(kill(pid, sig), 0);
    for (int i = 0; i < 100 && kill(pid, 0) == 0; i++)
        usleep((useconds_t)step_ms * 1000);
}

long ct_component_int(const char *name, const char *field)
{
    ct_arbor("--json status");
    json_t *j = ct_parse_out();
    long v = 0;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(j, "components"), i, c) {
        const char *n = json_string_value(json_object_get(c, "name"));
        if (n && strcmp(n, name) == 0)
            v = (long)json_integer_value(json_object_get(c, field));
    }
    json_decref(j);
    return v;
}

int ct_kill_daemons(const char *dir)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/cluster.json", dir);
    json_t *st = json_load_file(path, 0, NULL);
    size_t i;
    json_t *c;
    int killed = 0;
    json_array_foreach(json_object_get(st, "components"), i, c) {
        pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
        uint64_t ticks = (uint64_t)json_integer_value(json_object_get(c, "start_ticks"));
        if (pid > 0 && ct_same_process(pid, ticks)) {
            kill(pid, SIGKILL);
            killed++;
        }
    }
    json_decref(st);
    /* Computes outlive a killed arbor-control (it adopts them when it comes
     * back): DIR/control/computes/ * /info is "pid start_ticks secret". */
    char base[600];
    snprintf(base, sizeof(base), "%s/control/computes", dir);
    DIR *dh = opendir(base);
    struct dirent *e;
    while (dh && (e = readdir(dh)) != NULL) {
        char info[1000];
        pid_t pid;
        uint64_t ticks;
        snprintf(info, sizeof(info), "%s/%.255s/info", base, e->d_name);
        if (e->d_name[0] == 'c' && dmn_proc_file_read(info, &pid, &ticks, NULL, 0) == 0) {
            kill(pid, SIGKILL);
            killed++;
        }
    }
    if (dh)
        closedir(dh);
    return killed;
}

static void start_watchdog(const char *name)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[1]);
        setsid(); /* out of the test's process group: outlives its kill */
        char c;
        while (read(p[0], &c, 1) != 0 && errno == EINTR) {
        }
        ct_kill_daemons(ct.dir);
        const char *keep = getenv("ARBOR_KEEP_TMP");
        if (keep && keep[0] && strcmp(keep, "0") != 0) {
            fprintf(stderr, "%s: kept %s\n", name, ct.root);
        } else {
            nftw(ct.root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        _exit(0);
    }
    close(p[0]); /* p[1] stays open until the test process ends */
    fcntl(p[1], F_SETFD, FD_CLOEXEC);
}

/* ---- group setup and teardown ---------------------------------------------------- */

int ct_setup(const char *name, const char *tag)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(ct.root, sizeof(ct.root), "%s/arbor-%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp",
             tag);
    if (!mkdtemp(ct.root)) {
        return -1;
    }
    snprintf(ct.dir, sizeof(ct.dir), "%s/cluster", ct.root);
    start_watchdog(name);
    return 0;
}

int ct_group_teardown(void **state)
{
    (void)state;
    ct_arbor("stop --timeout 5");
    free(ct.out);
    free(ct.err);
    ct.out = ct.err = NULL;
    return 0;
}

void ct_psql(int port, const char *sql)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/script.sql", ct.root);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(sql, f);
    fclose(f);
    ct_expect(ct_sh("timeout 60 /usr/bin/psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p %d "
                    "-U arbor main -f %s", port, path), 0, sql);
}

void ct_word_after(const char *hay, const char *label, char *out, size_t cap)
{
    const char *p = strstr(hay, label);
    if (!p)
        fail_msg("no \"%s\" in:\n%s", label, hay);
    p += strlen(label);
    size_t n = strcspn(p, " \n");
    if (n == 0 || n >= cap)
        fail_msg("after \"%s\": a word of %zu characters", label, n);
    memcpy(out, p, n);
    out[n] = 0;
}
