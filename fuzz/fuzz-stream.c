/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the stream reader (src/wire/stream.c), the one
 * reader the destination engine and `blkmig inspect` use for both formats.
 *
 * Each input is read to its end three ways: with the format detected from
 * its first bytes, as a native stream and as a QEMU stream (block records
 * of the smallest chunk size, so that data records fit in fuzzer-sized
 * inputs; a native HELLO chooses its own).  Besides what the sanitizers
 * catch, it checks the reader's contract: items come at increasing offsets
 * inside the input, a record's payload lies wholly inside the reader's
 * buffer, END is final, every failure is a documented code with a
 * message, and a failed stream stays failed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "wire/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Touch every byte a record hands out, so ASan sees an over-read. */
static uint8_t touch(const struct wire_record *rec, uint32_t chunk)
{
	size_t n = 0;
	uint8_t x = 0;

	if (rec->kind == WIRE_REC_DATA)
		n = chunk;
	else if (rec->kind == WIRE_REC_WRITE && rec->op == WIRE_WRITE_DATA)
		n = rec->length;
	for (size_t i = 0; i < n; i++)
		x ^= rec->data[i];
	return x;
}

static volatile uint8_t sink;

static void run(enum wire_stream_format fmt, const uint8_t *data, size_t size)
{
	struct wire_membuf mb = { .p = data, .len = size };
	struct wire_stream *s;
	struct wire_item it;
	uint64_t last = 0;
	int r;

	if (wire_stream_new(fmt, wire_membuf_read, &mb, &s) < 0)
		return;
	check(wire_stream_set_qemu_chunk(s, WIRE_MIN_CHUNK_SIZE) == 0);
	for (;;) {
		r = wire_stream_next(s, &it);
		if (r < 0)
			break;
		check(it.offset >= last && it.offset <= size);
		check(wire_stream_offset(s) >= it.offset && wire_stream_offset(s) <= size);
		last = it.offset;
		switch (it.kind) {
		case WIRE_ITEM_END:
			/* Only where the input ends, or after a VMDESCRIPTION's
			 * JSON, which is the last thing a QEMU stream has. */
			check(wire_stream_offset(s) <= size);
			check(wire_stream_next(s, &it) == 0 && it.kind == WIRE_ITEM_END);
			wire_stream_free(s);
			return;
		case WIRE_ITEM_RECORD:
			check(wire_stream_chunk_size(s) != 0);
			sink ^= touch(&it.rec, wire_stream_chunk_size(s));
			break;
		case WIRE_ITEM_HELLO:
			check(it.hello->ndev >= 1 && it.hello->ndev <= NATIVE_MAX_DEVICES);
			break;
		case WIRE_ITEM_COMPLETE:
			check(it.complete->ndev <= NATIVE_MAX_DEVICES);
			check(it.complete->attempt >= 1);
			break;
		case WIRE_ITEM_ACK:
		case WIRE_ITEM_COMMIT:
		case WIRE_ITEM_DONE:
			check(it.value >= 1 && it.value <= UINT32_MAX);
			break;
		case WIRE_ITEM_STATE:
			check(it.state->held <= NATIVE_HELD_AWAITING);
			check((it.state->held == NATIVE_HELD_AWAITING) == (it.state->attempt > 0));
			check(it.state->held != NATIVE_HELD_NONE || it.state->sums == 0);
			break;
		case WIRE_ITEM_SUMS:
			check(it.sums->count >= 1 && it.sums->count <= NATIVE_SUMS_MAX);
			check(it.sums->dev < NATIVE_MAX_DEVICES);
			for (uint32_t i = 1; i < it.sums->count; i++)
				check(it.sums->e[i].chunk > it.sums->e[i - 1].chunk);
			break;
		case WIRE_ITEM_VERDICT:
			check(it.verdict->ndev >= 1 && it.verdict->ndev <= NATIVE_MAX_DEVICES);
			for (unsigned i = 0; i < it.verdict->ndev; i++)
				check(it.verdict->dev[i].differing <= it.verdict->dev[i].checked);
			break;
		case WIRE_ITEM_EXPORT:
			check(strlen(it.export->host) <= NATIVE_HOST_MAX);
			check(it.export->port != 0 || it.export->host[0] == '\0');
			break;
		case WIRE_ITEM_ABORT:
		case WIRE_ITEM_ERROR:
			check(strlen(it.error->reason) <= NATIVE_REASON_MAX);
			break;
		case WIRE_ITEM_SECTION:
		case WIRE_ITEM_FOOTER:
			check(it.section.name[0] != '\0');
			break;
		case WIRE_ITEM_VMDESC:
			check(it.value <= SAVEVM_VMDESC_MAX);
			break;
		default:
			break;
		}
	}
	check(r == -EBADMSG || r == -EPROTONOSUPPORT || r == -ENOTSUP || r == -ECONNRESET ||
	      r == -ENOMEM);
	check(err_msg()[0] != '\0');
	check(wire_stream_next(s, &it) == r);
	wire_stream_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(WIRE_STREAM_AUTO, data, size);
	run(WIRE_STREAM_NATIVE, data, size);
	run(WIRE_STREAM_QEMU, data, size);
	return 0;
}
