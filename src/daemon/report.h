/* SPDX-License-Identifier: MIT */
/*
 * Reports: the JSON objects that describe a migration (query-migrate, and
 * the --json output of send, receive and demo) and a --workload writer's
 * figures (query-workload, and "workload" in --json).  One builder each, so
 * the daemon and the CLI can never disagree on a field's name or unit.
 * Field names follow QEMU's query-migrate where one exists; docs/control.md
 * lists them all.  When you add a field, also document it there.
 */
#ifndef BLKMIG_DAEMON_REPORT_H
#define BLKMIG_DAEMON_REPORT_H

#include <json-c/json.h>

#include "migrate/migrate.h"

struct workload_stats;

/*
 * What a user calls the stage st is in: "setup", "bulk", "dirty",
 * "mirroring" (a dirty pass while writes are mirrored), "final", or the
 * terminal state's name.  Static string.
 */
const char *report_phase(const struct mig_stats *st);

/* The pass being worked on (1 is the bulk pass); after the end, the
 * number of passes made. */
uint64_t report_pass(const struct mig_stats *st);

/* Estimated time to send what is left at the rate now, in ns; UINT64_MAX
 * when unknown (no rate yet, or the migration has ended). */
uint64_t report_eta_ns(const struct mig_stats *st);

/*
 * The query-migrate object for st ("error-desc" when error is neither NULL
 * nor empty).  A new object the caller puts, or NULL on ENOMEM.
 */
json_object *report_stats_json(const struct mig_stats *st, const char *error);

/* {writes, bytes, latency-p50-us, latency-p99-us, latency-p999-us, latency-max-us, elapsed-us,
 * stopped-by}; a new object the caller puts, or NULL on ENOMEM. */
json_object *report_workload_json(const struct workload_stats *ws);

#endif
