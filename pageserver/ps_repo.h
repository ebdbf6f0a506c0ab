/*
 * ps_repo — the pageserver's repository on disk (prefix ps_repo_): tenants,
 * their timelines, branch names, create / list / delete / rename, and
 * crash recovery at load. Everything a timeline does once it exists is in
 * ps_timeline.h.
 *
 * Layout under the root directory:
 *
 *   <root>/tenants/<tenant hex>/timelines/<timeline hex>/metadata   ps_meta.h
 *                                                      /commits    ps_commits.h
 *                                                      /delta_<S>-<E>, image_<X>
 *                                                                  ps_layer.h
 *   <root>/tenants/<t>/timelines/<id>.tmp      a timeline being created
 *   <root>/tenants/<t>/timelines/<id>.deleted  a timeline being deleted
 *
 * Creating a timeline writes its directory under the .tmp name (metadata +
 * empty commits index, fsynced), renames it into place and fsyncs the
 * parent: O(1) whatever the size of the ancestor (only metadata is written;
 * the branch point is looked up in the ancestor's commits index by binary
 * search). Deleting renames to .deleted, fsyncs, then removes the tree.
 *
 * Opening reads each timeline's metadata only. A timeline whose metadata
 * holds a summary (written when it was unloaded or created, ps_timeline.h
 * Residency) stays unloaded until first use; the others (in use when the
 * pageserver stopped, or written by an older version) load at once.
 *
 * Crash recovery at ps_repo_open (and at a timeline's load): .tmp and
 * .deleted timeline directories are removed; in each timeline, temp layer files and layer files beyond
 * the metadata's disk_consistent_lsn (written but never published) are
 * deleted, the commits index is cut back to disk_consistent_lsn, and the
 * timeline resumes with last_record_lsn = disk_consistent_lsn: the WAL
 * receiver re-ingests from there (ps_timeline_last_record_lsn()). Children
 * are loaded after their ancestors; a timeline whose metadata does not
 * verify (or whose ancestor is missing) is logged and left out, and the
 * repository opens without it.
 *
 * Threads: every function may be called from any thread. A mutex guards
 * the tenant/timeline tables and is held across the (small) metadata I/O of
 * create, delete and rename, so lookups wait for those; the hot path should
 * keep the ps_timeline handles it looks up rather than look up per request.
 * Handles returned (ps_timeline *) carry a reference: release each with
 * ps_timeline_release(). A deleted timeline's handles keep working memory-
 * wise but its operations fail with PS_EDELETED.
 */
#ifndef ARBOR_PS_REPO_H
#define ARBOR_PS_REPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ids.h"
#include "lsn.h"
#include "ps_timeline.h"

typedef struct ps_repo ps_repo;

/* Opens (creating if needed) the repository at root and loads every tenant
 * and timeline, recovering from a crash as described above. cfg is copied;
 * its io and clock are borrowed. */
int ps_repo_open(const char *root, const ps_config *cfg, ps_repo **out);
/* Releases the repository's references. In-memory layers that were not
 * flushed are dropped (their WAL is re-ingested after the next open); call
 * ps_timeline_checkpoint first for a clean shutdown. */
void ps_repo_close(ps_repo *repo);

/* tenant_id NULL or zero: generate one. *out (may be NULL): the id.
 * PS_EEXIST if it exists. */
int ps_repo_create_tenant(ps_repo *repo, const arbor_id *tenant_id,
                          arbor_id *out);
/* *ids az_malloc'ed (az_free), sorted. */
int ps_repo_list_tenants(ps_repo *repo, arbor_id **ids, size_t *n);

typedef struct ps_timeline_create_args {
    arbor_id tenant_id;
    arbor_id timeline_id;       /* zero: generate */
    const char *branch_name;    /* required, unique in the tenant */
    arbor_id ancestor_id;       /* zero: a root timeline */
    /* Branch point: ancestor_lsn, or (by_timestamp) the LSN at
     * ancestor_timestamp_us (a timestamp after the last commit means the
     * head, one before the first is PS_EBRANCHLSN); 0 = ancestor's head. */
    lsn_t ancestor_lsn;
    bool by_timestamp;
    int64_t ancestor_timestamp_us;
    lsn_t start_lsn;            /* roots only; 0 = PS_DEFAULT_START_LSN */
    uint32_t pitr_window_s;     /* 0 = cfg.default_pitr_window_s */
} ps_timeline_create_args;

/* Creates a timeline (see the layout above). *out (may be NULL): a handle.
 * PS_ENOTFOUND (tenant or ancestor), PS_EEXIST (id or branch name),
 * PS_ENAME, PS_EBRANCHLSN, PS_EBELOW_GC, PS_EINVAL (start_lsn given for a
 * child), -errno. */
int ps_repo_create_timeline(ps_repo *repo, const ps_timeline_create_args *args,
                            ps_timeline **out);

/* Handle by id / by branch name. PS_ENOTFOUND. */
int ps_repo_get_timeline(ps_repo *repo, const arbor_id *tenant_id,
                         const arbor_id *timeline_id, ps_timeline **out);
int ps_repo_find_branch(ps_repo *repo, const arbor_id *tenant_id,
                        const char *branch_name, ps_timeline **out);

/* Handles on every timeline of a tenant, ancestors before children.
 * Release with ps_repo_free_list. */
int ps_repo_list_timelines(ps_repo *repo, const arbor_id *tenant_id,
                           ps_timeline ***out, size_t *n);
void ps_repo_free_list(ps_timeline **list, size_t n);
/* Handles on every timeline of every tenant (each tenant's ancestors before
 * its children). Release with ps_repo_free_list. */
int ps_repo_list_all(ps_repo *repo, ps_timeline ***out, size_t *n);

/* Deletes a timeline; with children only when with_children (then its
 * whole subtree, leaves first). *deleted (may be NULL): how many.
 * PS_ENOTFOUND, PS_EHASCHILDREN, -errno. */
int ps_repo_delete_timeline(ps_repo *repo, const arbor_id *tenant_id,
                            const arbor_id *timeline_id, bool with_children,
                            uint32_t *deleted);

/* PS_ENOTFOUND, PS_ENAME, PS_EEXIST (another timeline has the name). */
int ps_repo_rename_branch(ps_repo *repo, const arbor_id *tenant_id,
                          const arbor_id *timeline_id, const char *new_name);

/* Runs ps_timeline_checkpoint on every timeline (clean shutdown); the first
 * error is returned, the others logged. */
int ps_repo_checkpoint_all(ps_repo *repo);

#endif
