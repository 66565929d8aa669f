/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the block record decoder (src/wire/record.c).
 *
 * The input is read as a run of consecutive records, once per chunk size
 * (the smallest, QEMU's, and one chosen by the first byte, which may be
 * invalid).  Besides what the sanitizers catch, it checks the decoder's
 * contract: *used is within the input on success and beyond it on -EAGAIN,
 * only the documented errors appear, and a decoded header re-encodes to the
 * very bytes it came from.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "wire/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

/* Encoding what was decoded must give the input's header bytes back. */
static void check_reencode(const uint8_t *in, const struct wire_record *rec)
{
	uint8_t hdr[WIRE_REC_HDR_MAX];
	int n;

	switch (rec->kind) {
	case WIRE_REC_PROGRESS:
		if (rec->percent > 100)
			return; /* accepted on decode, never sent */
		break;
	case WIRE_REC_EOS:
		if (in[0] | in[1] | in[2] | in[3] | in[4] | in[5] | in[6] | (in[7] & 0xfe))
			return; /* stray offset bits are not re-created */
		break;
	case WIRE_REC_DATA:
	case WIRE_REC_ZERO:
	case WIRE_REC_ZSTD:
		check(rec->name_len >= 1 && strlen(rec->name) == rec->name_len);
		break;
	}
	n = wire_rec_encode_header(hdr, rec);
	check(n >= 8 && n <= WIRE_REC_HDR_MAX);
	check(memcmp(hdr, in, (size_t)n) == 0);
}

static void run(const uint8_t *data, size_t size, uint32_t chunk_size)
{
	size_t pos = 0;

	while (pos < size) {
		struct wire_record rec;
		size_t used = 0;
		int r = wire_rec_decode(data + pos, size - pos, chunk_size, &rec, &used);

		if (r == -EAGAIN) {
			check(used > size - pos);
			return;
		}
		if (r < 0) {
			check(r == -EBADMSG || r == -EINVAL);
			check(err_msg()[0] != '\0');
			return;
		}
		check(r == 0 && used >= 8 && used <= size - pos);
		if (rec.kind == WIRE_REC_DATA)
			check(rec.data == data + pos + 9 + rec.name_len &&
			      used == 9 + (size_t)rec.name_len + chunk_size);
		check_reencode(data + pos, &rec);
		pos += used;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	run(data, size, WIRE_MIN_CHUNK_SIZE);
	run(data, size, WIRE_QEMU_CHUNK_SIZE);
	if (size > 0)
		run(data + 1, size - 1, UINT32_C(1) << (data[0] & 31)); /* 2^0 .. 2^31 */
	return 0;
}
