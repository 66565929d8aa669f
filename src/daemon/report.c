/* SPDX-License-Identifier: MIT */
/* Migration and workload reports as JSON; see report.h. */
#include "report.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "workload/workload.h"

static int64_t ms(uint64_t ns)
{
	return (int64_t)(ns / 1000000u);
}

static bool running(const struct mig_stats *st)
{
	return st->state < MIG_COMPLETED;
}

const char *report_phase(const struct mig_stats *st)
{
	switch (st->state) {
	case MIG_SETUP:
		return "setup";
	case MIG_BULK:
		return "bulk";
	case MIG_DIRTY:
		return st->active ? "mirroring" : "dirty";
	case MIG_FINAL:
		return "final";
	default:
		return mig_state_name(st->state);
	}
}

uint64_t report_pass(const struct mig_stats *st)
{
	return st->iterations + (running(st) && st->state != MIG_SETUP);
}

uint64_t report_eta_ns(const struct mig_stats *st)
{
	if (!running(st) || !st->rate)
		return UINT64_MAX;
	return (uint64_t)((double)st->remaining * 1e9 / (double)st->rate);
}

/* Add key: val to o, consuming val; false on ENOMEM (val is gone). */
static bool add(json_object *o, const char *key, json_object *val)
{
	if (!val)
		return false;
	if (json_object_object_add(o, key, val) < 0) {
		json_object_put(val);
		return false;
	}
	return true;
}

static bool add_int(json_object *o, const char *key, uint64_t v)
{
	return add(o, key, json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

static json_object *device_json(const struct mig_dev_stats *d)
{
	json_object *o = json_object_new_object();

	if (o && add(o, "name", json_object_new_string(d->name)) && add_int(o, "size", d->size) &&
	    add_int(o, "data-chunks", d->data_chunks) &&
	    add_int(o, "zero-chunks", d->zero_chunks) && add_int(o, "skipped-chunks", d->skipped) &&
	    add_int(o, "matched-chunks", d->matched) &&
	    add_int(o, "differing-chunks", d->differing) &&
	    add_int(o, "unsettled-chunks", d->unsettled))
		return o;
	json_object_put(o);
	return NULL;
}

json_object *report_stats_json(const struct mig_stats *st, const char *error)
{
	json_object *o = json_object_new_object(), *devs = json_object_new_array();
	double secs = (double)st->total_ns / 1e9;
	uint64_t eta = report_eta_ns(st);
	bool ok;

	if (!o || !devs)
		goto fail;
	ok = add(o, "status",
		 json_object_new_string(st->retrying ? "retrying" : mig_state_name(st->state)));
	if (ok && error && *error)
		ok = add(o, "error-desc", json_object_new_string(error));
	/* total-time runs while the migration does (as in QEMU). */
	ok = ok && add_int(o, "total-time", ms(st->total_ns)) &&
	     add_int(o, "setup-time", ms(st->setup_ns)) &&
	     add_int(o, "downtime", ms(st->downtime_ns)) &&
	     add(o, "expected-downtime",
		 json_object_new_int64(
		     st->expected_downtime_ns == UINT64_MAX ? -1 : ms(st->expected_downtime_ns))) &&
	     add_int(o, "transferred", st->transferred) &&
	     add_int(o, "data-bytes", st->data_bytes) && add_int(o, "total", st->total) &&
	     add_int(o, "remaining", st->remaining) && add_int(o, "iterations", st->iterations) &&
	     add_int(o, "bandwidth", st->bandwidth) &&
	     add(o, "mbps",
		 json_object_new_double(secs > 0 ? (double)st->transferred * 8 / secs / 1e6 : 0)) &&
	     add_int(o, "dirty-rate", st->dirty_rate) &&
	     add(o, "phase", json_object_new_string(report_phase(st))) &&
	     add_int(o, "pass", report_pass(st)) && add_int(o, "rate", st->rate) &&
	     add(o, "eta", json_object_new_int64(eta == UINT64_MAX ? -1 : ms(eta))) &&
	     add(o, "mode", json_object_new_string(mig_mode_name(st->mode))) &&
	     (!st->mirror_share || add_int(o, "mirror-share", st->mirror_share)) &&
	     add(o, "mirroring", json_object_new_boolean(st->active));
	if (ok && st->active && st->mode_reason[0])
		ok = add(o, "mirroring-reason", json_object_new_string(st->mode_reason));
	if (ok && st->active)
		ok = add_int(o, "mirroring-since-pass", st->active_since);
	ok = ok && add(o, "converging", json_object_new_boolean(st->converging)) &&
	     add_int(o, "mirrored-writes", st->mirror_writes) &&
	     add_int(o, "mirrored-bytes", st->mirror_bytes) &&
	     add_int(o, "mirror-suspensions", st->mirror_suspensions) &&
	     add_int(o, "switchover-attempts", st->switchovers) &&
	     add_int(o, "abandoned-attempts", st->abandoned) &&
	     add_int(o, "connections", st->connections) &&
	     /* The source's; the destination's figures leave it out (0). */
	     (!st->lanes || add_int(o, "parallel-connections", st->lanes)) &&
	     add(o, "verify", json_object_new_boolean(st->verify)) &&
	     add_int(o, "max-pause", ms(st->max_pause_ns)) &&
	     add_int(o, "chunk-size", st->chunk_size) &&
	     add(o, "compress", json_object_new_string(mig_compress_name(st->compress))) &&
	     add(o, "compressing", json_object_new_boolean(st->compressing)) &&
	     add_int(o, "compressed-chunks", st->compressed_chunks) &&
	     add_int(o, "raw-chunks", st->raw_chunks) &&
	     add_int(o, "incompressible-chunks", st->incompressible) &&
	     add_int(o, "payload-bytes", st->payload_bytes) &&
	     add(o, "compression-ratio",
		 json_object_new_double(
		     st->payload_bytes ? (double)st->data_bytes / (double)st->payload_bytes : 1.0));
	for (unsigned i = 0; ok && i < st->ndev; i++) {
		json_object *d = device_json(&st->dev[i]);

		ok = d && json_object_array_add(devs, d) == 0;
		if (!ok)
			json_object_put(d);
	}
	if (!ok)
		goto fail;
	if (!add(o, "devices", devs)) {
		json_object_put(o);
		return NULL;
	}
	return o;

fail:
	json_object_put(devs);
	json_object_put(o);
	return NULL;
}

json_object *report_workload_json(const struct workload_stats *ws)
{
	json_object *o = json_object_new_object();

	if (o && add_int(o, "writes", ws->writes) && add_int(o, "bytes", ws->bytes) &&
	    add_int(o, "latency-p50-us", ws->p50_ns / 1000) &&
	    add_int(o, "latency-p99-us", ws->p99_ns / 1000) &&
	    add_int(o, "latency-p999-us", ws->p999_ns / 1000) &&
	    add_int(o, "latency-max-us", ws->max_ns / 1000) &&
	    add_int(o, "elapsed-us", ws->elapsed_ns / 1000) &&
	    add(o, "stopped-by",
		json_object_new_string(ws->stopped_by ? strerror(-ws->stopped_by) : "")))
		return o;
	json_object_put(o);
	return NULL;
}
