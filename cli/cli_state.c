/*
 * cli_state — see cli_state.h.
 */
#define _GNU_SOURCE
#include "cli_state.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli_cmd.h"
#include "cli_fmt.h"
#include "timestamp.h"

static const char *const g_kind_names[] = { "safekeeper", "pageserver", "compute", "control",
                                               "proxy" };

const char *cli_comp_kind_name(cli_comp_kind kind)
{
    return (unsigned)kind < sizeof(g_kind_names) / sizeof(g_kind_names[0]) ? g_kind_names[kind]
                                                                         : "?";
}

cli_component *cli_state_add(cli_state *st, const char *name, cli_comp_kind kind)
{
    if (st->n_comp >= CLI_MAX_COMPONENTS) {
        cli_err("too many components in %s/%s (at most %d): stop some endpoints", st->dir,
                CLI_STATE_FILE, CLI_MAX_COMPONENTS);
        return NULL;
    }
    cli_component *c = &st->comp[st->n_comp++];
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->kind = kind;
    return c;
}

void cli_state_remove(cli_state *st, int idx)
{
    if (idx < 0 || idx >= st->n_comp) {
        return;
    }
    memmove(&st->comp[idx], &st->comp[idx + 1],
            (size_t)(st->n_comp - idx - 1) * sizeof(st->comp[0]));
    st->n_comp--;
}

void cli_state_init(cli_state *st, const char *dir)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->dir, sizeof(st->dir), "%s", dir);
    st->base_port = CLI_DEFAULT_BASE_PORT;
}

void cli_state_free(cli_state *st)
{
    if (st->extra) {
        json_decref(st->extra);
        st->extra = NULL;
    }
}

cli_component *cli_state_comp(cli_state *st, cli_comp_kind kind, int idx)
{
    for (int i = 0; i < st->n_comp; i++) {
        if (st->comp[i].kind == kind && idx-- == 0) {
            return &st->comp[i];
        }
    }
    return NULL;
}

void cli_comp_path(const cli_state *st, const cli_component *c, const char *file,
                   char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s%s%s", st->dir, c->datadir[0] ? c->datadir : c->name,
             file ? "/" : "", file ? file : "");
}

static int64_t time_field(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    int64_t us = 0;
    if (s) {
        ts_parse(s, 0, &us);
    }
    return us;
}

/* Copies the string field key of o into buf; a missing one is "". */
static int str_field(json_t *o, const char *key, char *buf, size_t len)
{
    const char *s = json_string_value(json_object_get(o, key));
    buf[0] = 0;
    if (!s) {
        return 0;
    }
    if (strlen(s) >= len || strstr(s, "..")) {
        return CLI_EFAIL;
    }
    snprintf(buf, len, "%s", s);
    return 0;
}

static int load_component(json_t *o, cli_component *c)
{
    memset(c, 0, sizeof(*c));
    const char *kind = json_string_value(json_object_get(o, "kind"));
    if (!kind || str_field(o, "name", c->name, sizeof(c->name)) != 0 || !c->name[0] ||
        str_field(o, "datadir", c->datadir, sizeof(c->datadir)) != 0) {
        return CLI_EFAIL;
    }
    if (strcmp(kind, "safekeeper") == 0) {
        c->kind = CLI_COMP_SAFEKEEPER;
    } else if (strcmp(kind, "pageserver") == 0) {
        c->kind = CLI_COMP_PAGESERVER;
    } else if (strcmp(kind, "control") == 0) {
        c->kind = CLI_COMP_CONTROL;
    } else if (strcmp(kind, "proxy") == 0) {
        c->kind = CLI_COMP_PROXY;
    } else if (strcmp(kind, "compute") == 0) {
        c->kind = CLI_COMP_COMPUTE;
        const char *auth = json_string_value(json_object_get(o, "auth"));
        c->scram = auth && strcmp(auth, "scram") == 0;
        if (str_field(o, "branch", c->branch, sizeof(c->branch)) != 0 ||
            str_field(o, "timeline_id", c->timeline, sizeof(c->timeline)) != 0 ||
            str_field(o, "role", c->role, sizeof(c->role)) != 0 ||
            str_field(o, "lsn", c->lsn, sizeof(c->lsn)) != 0) {
            return CLI_EFAIL;
        }
    } else {
        return CLI_EFAIL;
    }
    c->node_id = (int)json_integer_value(json_object_get(o, "node_id"));
    c->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
    c->start_ticks = (uint64_t)json_integer_value(json_object_get(o, "start_ticks"));
    c->grpc_port = (int)json_integer_value(json_object_get(o, "grpc_port"));
    c->http_port = (int)json_integer_value(json_object_get(o, "http_port"));
    return 0;
}

static int load_json(cli_state *st, json_t *root, const char *path)
{
    if (json_integer_value(json_object_get(root, "version")) != CLI_STATE_VERSION) {
        cli_err("%s: unknown version (expected %d)", path, CLI_STATE_VERSION);
        return CLI_EFAIL;
    }
    st->base_port = (int)json_integer_value(json_object_get(root, "base_port"));
    const char *tenant = json_string_value(json_object_get(root, "tenant_id"));
    if (tenant) {
        if (id_parse(tenant, &st->tenant) != 0) {
            cli_err("%s: bad tenant_id '%s'", path, tenant);
            return CLI_EFAIL;
        }
        st->has_tenant = true;
    }
    st->started_at_us = time_field(root, "started_at");
    st->stopped_at_us = time_field(root, "stopped_at");
    json_t *comps = json_object_get(root, "components");
    size_t i;
    json_t *c;
    json_array_foreach(comps, i, c) {
        if (st->n_comp >= CLI_MAX_COMPONENTS || load_component(c, &st->comp[st->n_comp]) != 0) {
            cli_err("%s: bad component #%zu", path, i + 1);
            return CLI_EFAIL;
        }
        /* An endpoint in the file is one an older CLI started itself (they are
         * arbor-control's now, load_endpoints): kept until it is stopped. */
        st->comp[st->n_comp].legacy = st->comp[st->n_comp].kind == CLI_COMP_COMPUTE;
        st->n_comp++;
    }
    static const char *const known[] = { "version", "base_port", "tenant_id", "started_at",
                                         "stopped_at", "components" };
    st->extra = json_deep_copy(root);
    for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
        json_object_del(st->extra, known[k]);
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const cli_component *)a)->name, ((const cli_component *)b)->name);
}

/* The endpoints that arbor-control runs for this CLI: DIR/endpoints/<d>/
 * endpoint.json each (written by arbor-control, ctl_api.h), by name. */
static void load_endpoints(cli_state *st)
{
    char top[4200];
    snprintf(top, sizeof(top), "%s/endpoints", st->dir);
    DIR *dh = opendir(top);
    if (!dh)
        return;
    int first = st->n_comp;
    struct dirent *d;
    while ((d = readdir(dh)) && st->n_comp < CLI_MAX_COMPONENTS) {
        if (d->d_name[0] == '.' || strlen(d->d_name) > 100)
            continue;
        char path[4400];
        snprintf(path, sizeof(path), "%s/%s/endpoint.json", top, d->d_name);
        json_t *o = json_load_file(path, 0, NULL);
        cli_component *c = &st->comp[st->n_comp];
        if (o && load_component(o, c) == 0 && c->kind == CLI_COMP_COMPUTE) {
            snprintf(c->datadir, sizeof(c->datadir), "endpoints/%s", d->d_name);
            for (int i = 0; i < first; i++) {   /* it replaces an old entry of the file */
                if (st->comp[i].legacy && strcmp(st->comp[i].name, c->name) == 0) {
                    cli_component keep = *c;
                    cli_state_remove(st, i);
                    first--;
                    st->comp[st->n_comp] = keep;
                    c = &st->comp[st->n_comp];
                    break;
                }
            }
            st->n_comp++;
        }
        json_decref(o);
    }
    closedir(dh);
    qsort(st->comp + first, (size_t)(st->n_comp - first), sizeof(st->comp[0]), by_name);
}

int cli_state_load(const char *dir, cli_state *st)
{
    cli_state_init(st, dir);
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, CLI_STATE_FILE);
    if (access(path, F_OK) != 0) {
        return CLI_ENOTFOUND;
    }
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root || !json_is_object(root)) {
        cli_err("%s: not a valid state file: %s (line %d)", path, jerr.text, jerr.line);
        json_decref(root);
        return CLI_EFAIL;
    }
    int rc = load_json(st, root, path);
    json_decref(root);
    if (rc != 0) {
        cli_state_free(st);
    } else {
        load_endpoints(st);
    }
    return rc;
}

static json_t *time_json(int64_t us)
{
    char buf[CLI_TIME_STRLEN];
    return us > 0 ? json_string(cli_fmt_time(us, buf)) : json_null();
}

static json_t *to_json(const cli_state *st, bool endpoints)
{
    json_t *root = st->extra ? json_deep_copy(st->extra) : json_object();
    char hex[ID_STR_SIZE];
    json_object_set_new(root, "version", json_integer(CLI_STATE_VERSION));
    json_object_set_new(root, "base_port", json_integer(st->base_port));
    json_object_set_new(root, "tenant_id", st->has_tenant
                                               ? json_string(id_format(&st->tenant, hex))
                                               : json_null());
    json_object_set_new(root, "started_at", time_json(st->started_at_us));
    json_object_set_new(root, "stopped_at", time_json(st->stopped_at_us));
    json_t *comps = json_array();
    for (int i = 0; i < st->n_comp; i++) {
        const cli_component *c = &st->comp[i];
        if (c->kind == CLI_COMP_COMPUTE && !endpoints && !c->legacy)
            continue;
        const char *dd = c->datadir[0] ? c->datadir : c->name;
        char log[256];
        snprintf(log, sizeof(log), "%s/log", dd);
        json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:I, s:i, s:i, s:s, s:s}",
            "name", c->name, "kind", cli_comp_kind_name(c->kind), "node_id", c->node_id,
            "pid", (int)c->pid, "start_ticks", (json_int_t)c->start_ticks,
            "grpc_port", c->grpc_port, "http_port", c->http_port, "datadir", dd,
            "log", log);
        if (c->kind == CLI_COMP_COMPUTE) {
            json_object_set_new(o, "branch", json_string(c->branch));
            json_object_set_new(o, "timeline_id", json_string(c->timeline));
            json_object_set_new(o, "role", json_string(c->role));
            json_object_set_new(o, "lsn", c->lsn[0] ? json_string(c->lsn) : json_null());
            json_object_set_new(o, "auth", json_string(c->scram ? "scram" : "trust"));
        }
        json_array_append_new(comps, o);
    }
    json_object_set_new(root, "components", comps);
    return root;
}

json_t *cli_state_to_json(const cli_state *st)
{
    return to_json(st, true);
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int rc = fsync(fd) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

int cli_state_save(const cli_state *st)
{
    char path[4200], tmp[4210];
    snprintf(path, sizeof(path), "%s/%s", st->dir, CLI_STATE_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    json_t *root = to_json(st, false);   /* the endpoints' state is arbor-control's */
    int rc = json_dump_file(root, tmp, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (rc != 0 || fsync_path(tmp, O_RDONLY) != 0 || rename(tmp, path) != 0) {
        cli_err("cannot write %s: %s", path, strerror(errno));
        unlink(tmp);
        return CLI_EFAIL;
    }
    fsync_path(st->dir, O_RDONLY | O_DIRECTORY);
    return 0;
}

int cli_state_lock(const char *dir, int *fd_out)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        cli_err("cannot create %s: %s", dir, strerror(errno));
        return CLI_EFAIL;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        cli_err("cannot open %s: %s", path, strerror(errno));
        return CLI_EFAIL;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        cli_note("another arbor start/stop runs on %s; waiting", dir);
        if (flock(fd, LOCK_EX) != 0) {
            cli_err("cannot lock %s: %s", path, strerror(errno));
            close(fd);
            return CLI_EFAIL;
        }
    }
    *fd_out = fd;
    return 0;
}
