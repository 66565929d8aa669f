/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the native envelope decoders (src/wire/native.c).
 *
 * Each input is tried three ways: as a HELLO; as a message stream the way a
 * peer reads one (frame header, then the body decoder for that type, BLOCKS
 * followed through its records up to EOS); and as a bare body for every
 * body decoder.  Whatever decodes must re-encode to the same bytes, and
 * every failure must be one of the documented codes with a message.
 *
 * Every message type of native.h is covered, in both directions (the
 * stream allows all of them, as neither engine does): when you add one,
 * add it to ALLOW_ALL, try_stream() and, if it has a body decoder,
 * try_bodies(), and a seed to make-seeds.py.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "wire/native.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ALLOW_ALL                                                                                  \
	(NATIVE_ALLOW(NATIVE_MSG_BLOCKS) | NATIVE_ALLOW(NATIVE_MSG_COMPLETE) |                     \
	 NATIVE_ALLOW(NATIVE_MSG_ABORT) | NATIVE_ALLOW(NATIVE_MSG_COMMIT) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_READY) | NATIVE_ALLOW(NATIVE_MSG_ACK) |                           \
	 NATIVE_ALLOW(NATIVE_MSG_ERROR) | NATIVE_ALLOW(NATIVE_MSG_SYNCED) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_WACK) | NATIVE_ALLOW(NATIVE_MSG_VERDICT) |                        \
	 NATIVE_ALLOW(NATIVE_MSG_STATE) | NATIVE_ALLOW(NATIVE_MSG_SUMS) |                          \
	 NATIVE_ALLOW(NATIVE_MSG_DONE) | NATIVE_ALLOW(NATIVE_MSG_EXPORT))

/* Large structs and buffers live here, not on the fuzzer's stack. */
static struct native_hello hello;
static struct native_complete complete;
static struct native_error error;
static struct native_state state;
static struct native_sums sums;
static struct native_verdict verdict;
static struct native_export export;
static uint8_t out[NATIVE_FRAME_HDR + NATIVE_MSG_MAX];

static void check(int ok)
{
	if (!ok)
		abort();
}

static void check_failure(int r)
{
	check(r == -EBADMSG || r == -EPROTONOSUPPORT);
	check(err_msg()[0] != '\0');
}

static void try_hello(const uint8_t *data, size_t size)
{
	size_t used = 0;
	int r = native_hello_decode(data, size, &hello, &used);

	if (r == -EAGAIN) {
		check(used > size && used <= NATIVE_HELLO_MAX);
		return;
	}
	if (r < 0) {
		check_failure(r);
		return;
	}
	check(used <= size && used <= NATIVE_HELLO_MAX);
	r = native_hello_encode(out, sizeof(out), &hello);
	check(r > 0 && (size_t)r == used && memcmp(out, data, used) == 0);
}

/* Body decoders; re-encode what decoded and compare with the frame. */
static void try_complete(const uint8_t *frame, size_t body_len)
{
	int r = native_complete_decode(frame + NATIVE_FRAME_HDR, body_len, &complete);

	if (r < 0) {
		check_failure(r);
		return;
	}
	r = native_complete_encode(out, sizeof(out), &complete);
	check(r > 0 && (size_t)r == NATIVE_FRAME_HDR + body_len);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, body_len) == 0);
}

static void try_error(const uint8_t *frame, size_t body_len)
{
	size_t n;
	int r = native_error_decode(frame + NATIVE_FRAME_HDR, body_len, &error);

	if (r < 0) {
		check_failure(r);
		return;
	}
	n = strlen(error.reason);
	check(n <= NATIVE_REASON_MAX && n <= body_len - 4);
	/* Only an untouched reason can round-trip. */
	if (n != body_len - 4 || memcmp(error.reason, frame + NATIVE_FRAME_HDR + 4, n) != 0)
		return;
	r = native_error_encode(out, sizeof(out), NATIVE_MSG_ERROR, &error);
	check(r > 0 && (size_t)r == NATIVE_FRAME_HDR + body_len);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, body_len) == 0);
}

static void try_ready(const uint8_t *frame, size_t body_len)
{
	uint32_t version;
	int r = native_ready_decode(frame + NATIVE_FRAME_HDR, body_len, &version);

	if (r < 0) {
		check_failure(r);
		return;
	}
	check(native_ready_encode(out, sizeof(out), version) == NATIVE_FRAME_HDR + 4);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, 4) == 0);
}

/* SYNCED and WACK: one be64 each, so any 8-byte body decodes and
 * re-encodes exactly. */
static void try_u64(const uint8_t *frame, size_t body_len, enum native_msg type)
{
	uint64_t v;
	int r = type == NATIVE_MSG_SYNCED
		    ? native_synced_decode(frame + NATIVE_FRAME_HDR, body_len, &v)
		    : native_wack_decode(frame + NATIVE_FRAME_HDR, body_len, &v);

	if (r < 0) {
		check_failure(r);
		check(body_len != 8);
		return;
	}
	check(body_len == 8);
	r = type == NATIVE_MSG_SYNCED ? native_synced_encode(out, sizeof(out), v)
				      : native_wack_encode(out, sizeof(out), v);
	check(r == NATIVE_FRAME_HDR + 8);
	check(out[0] == type);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, 8) == 0);
}

/* ACK, COMMIT and DONE: a be32 attempt, so any 4-byte body but 0 decodes
 * and re-encodes exactly. */
static void try_attempt(const uint8_t *frame, size_t body_len, enum native_msg type)
{
	uint32_t attempt;
	int r = native_attempt_decode(native_msg_name((uint8_t)type), frame + NATIVE_FRAME_HDR,
				      body_len, &attempt);

	if (r < 0) {
		check_failure(r);
		check(body_len != 4 || get_be32(frame + NATIVE_FRAME_HDR) == 0);
		return;
	}
	check(body_len == 4 && attempt >= 1);
	r = type == NATIVE_MSG_ACK	? native_ack_encode(out, sizeof(out), attempt)
	    : type == NATIVE_MSG_COMMIT ? native_commit_encode(out, sizeof(out), attempt)
					: native_done_encode(out, sizeof(out), attempt);
	check(r == NATIVE_FRAME_HDR + 4);
	check(out[0] == type);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, 4) == 0);
}

/* STATE: what decodes obeys the held rules and re-encodes exactly. */
static void try_state(const uint8_t *frame, size_t body_len)
{
	int r = native_state_decode(frame + NATIVE_FRAME_HDR, body_len, &state);

	if (r < 0) {
		check_failure(r);
		return;
	}
	check(body_len == 16 && state.held <= NATIVE_HELD_AWAITING);
	check((state.held == NATIVE_HELD_AWAITING) == (state.attempt > 0));
	check(state.held != NATIVE_HELD_NONE || state.sums == 0);
	r = native_state_encode(out, sizeof(out), &state);
	check(r == NATIVE_FRAME_HDR + 16);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, 16) == 0);
}

/* SUMS: 1..NATIVE_SUMS_MAX entries, strictly ascending, device < 64. */
static void try_sums(const uint8_t *frame, size_t body_len)
{
	int r = native_sums_decode(frame + NATIVE_FRAME_HDR, body_len, &sums);

	if (r < 0) {
		check_failure(r);
		return;
	}
	check(sums.count >= 1 && sums.count <= NATIVE_SUMS_MAX);
	check(sums.dev < NATIVE_MAX_DEVICES);
	check(body_len == 6 + (size_t)sums.count * NATIVE_SUM_ITEM);
	for (uint32_t i = 1; i < sums.count; i++)
		check(sums.e[i].chunk > sums.e[i - 1].chunk);
	r = native_sums_encode(out, sizeof(out), &sums);
	check(r > 0 && (size_t)r == NATIVE_FRAME_HDR + body_len);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, body_len) == 0);
}

static void try_verdict(const uint8_t *frame, size_t body_len)
{
	int r = native_verdict_decode(frame + NATIVE_FRAME_HDR, body_len, &verdict);

	if (r < 0) {
		check_failure(r);
		return;
	}
	check(verdict.ndev >= 1 && verdict.ndev <= NATIVE_MAX_DEVICES);
	for (unsigned int i = 0; i < verdict.ndev; i++)
		check(verdict.dev[i].differing <= verdict.dev[i].checked);
	r = native_verdict_encode(out, sizeof(out), &verdict);
	check(r > 0 && (size_t)r == NATIVE_FRAME_HDR + body_len);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, body_len) == 0);
}

static void try_export(const uint8_t *frame, size_t body_len)
{
	int r = native_export_decode(frame + NATIVE_FRAME_HDR, body_len, &export);

	if (r < 0) {
		check_failure(r);
		return;
	}
	check(strlen(export.host) <= NATIVE_HOST_MAX);
	check(export.port != 0 || export.host[0] == '\0');
	r = native_export_encode(out, sizeof(out), &export);
	check(r > 0 && (size_t)r == NATIVE_FRAME_HDR + body_len);
	check(memcmp(out + NATIVE_FRAME_HDR, frame + NATIVE_FRAME_HDR, body_len) == 0);
}

/* BLOCKS: records from p up to and including an EOS.  Returns the bytes
 * consumed, or 0 when the stream ends or fails first. */
static size_t try_blocks(const uint8_t *p, size_t len)
{
	size_t pos = 0;

	while (pos < len) {
		struct wire_record rec;
		size_t used = 0;
		int r = wire_rec_decode(p + pos, len - pos, WIRE_MIN_CHUNK_SIZE, &rec, &used);

		if (r == -EAGAIN) {
			check(used > len - pos);
			return 0;
		}
		if (r < 0) {
			check_failure(r);
			return 0;
		}
		check(used <= len - pos);
		pos += used;
		if (rec.kind == WIRE_REC_EOS)
			return pos;
	}
	return 0;
}

static void try_stream(const uint8_t *data, size_t size)
{
	size_t pos = 0;

	while (size - pos >= NATIVE_FRAME_HDR) {
		const uint8_t *frame = data + pos;
		uint8_t type = 0;
		uint32_t len = 0;
		size_t n;
		int r = native_frame_header(frame, ALLOW_ALL, &type, &len);

		if (r < 0) {
			check_failure(r);
			return;
		}
		check(len <= NATIVE_MSG_MAX);
		if (type == NATIVE_MSG_BLOCKS) {
			check(len == 0);
			n = try_blocks(frame + 1, size - pos - 1);
			if (n == 0)
				return;
			pos += 1 + n;
			continue;
		}
		if (size - pos - NATIVE_FRAME_HDR < len)
			return;
		switch (type) {
		case NATIVE_MSG_COMPLETE:
			try_complete(frame, len);
			break;
		case NATIVE_MSG_ABORT:
		case NATIVE_MSG_ERROR:
			try_error(frame, len);
			break;
		case NATIVE_MSG_READY:
			try_ready(frame, len);
			break;
		case NATIVE_MSG_ACK:
		case NATIVE_MSG_COMMIT:
		case NATIVE_MSG_DONE:
			try_attempt(frame, len, (enum native_msg)type);
			break;
		case NATIVE_MSG_STATE:
			try_state(frame, len);
			break;
		case NATIVE_MSG_SUMS:
			try_sums(frame, len);
			break;
		case NATIVE_MSG_VERDICT:
			try_verdict(frame, len);
			break;
		case NATIVE_MSG_EXPORT:
			try_export(frame, len);
			break;
		case NATIVE_MSG_SYNCED:
		case NATIVE_MSG_WACK:
			try_u64(frame, len, (enum native_msg)type);
			break;
		default:
			abort(); /* frame_header let an unknown type through */
		}
		pos += NATIVE_FRAME_HDR + len;
	}
}

/* Every body decoder on the raw input, with a fake frame header in front
 * so the helpers above can be shared. */
static void try_bodies(const uint8_t *data, size_t size)
{
	uint8_t *frame;

	if (size > NATIVE_MSG_MAX)
		return;
	frame = malloc(NATIVE_FRAME_HDR + size);
	if (!frame)
		return;
	memset(frame, 0, NATIVE_FRAME_HDR);
	memcpy(frame + NATIVE_FRAME_HDR, data, size);
	try_complete(frame, size);
	try_error(frame, size);
	try_ready(frame, size);
	try_u64(frame, size, NATIVE_MSG_SYNCED);
	try_u64(frame, size, NATIVE_MSG_WACK);
	try_attempt(frame, size, NATIVE_MSG_ACK);
	try_attempt(frame, size, NATIVE_MSG_COMMIT);
	try_attempt(frame, size, NATIVE_MSG_DONE);
	try_state(frame, size);
	try_sums(frame, size);
	try_verdict(frame, size);
	try_export(frame, size);
	free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	try_hello(data, size);
	try_stream(data, size);
	try_bodies(data, size);
	return 0;
}
