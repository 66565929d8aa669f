/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the QEMU savevm envelope decoders (src/wire/savevm.c).
 *
 * The input is read as a QEMU migration stream, the way a receiver walks
 * one: header, then top-level items; a section's payload is read as a "ram"
 * payload, a fixed-size skip ("timer", "globalstate") or block records up to
 * EOS, then its footer; a VMDESCRIPTION's JSON is skipped.  Block records use
 * the smallest chunk size so that data records fit in fuzzer-sized inputs.
 * Each decoder is also run once directly on the whole input.
 *
 * Besides what the sanitizers catch, it checks the decoders' contract:
 * *used is within the input on success and beyond it on -EAGAIN, only the
 * documented errors appear with a message, and a decoded section header
 * re-encodes to the very bytes it came from.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "wire/record.h"
#include "wire/savevm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_SECTIONS 16

static void check(int ok)
{
	if (!ok)
		abort();
}

/* The common contract of every decoder; returns whether to go on. */
static int check_result(int r, size_t used, size_t avail)
{
	if (r == -EAGAIN) {
		check(used > avail);
		return 0;
	}
	if (r < 0) {
		check(r == -EBADMSG || r == -ENOTSUP);
		check(err_msg()[0] != '\0');
		return 0;
	}
	check(r == 0 && used >= 1 && used <= avail);
	return 1;
}

static void check_reencode(const uint8_t *in, size_t used, const struct savevm_section *s)
{
	uint8_t out[SAVEVM_SECTION_HDR_MAX];
	int n = savevm_section_encode(out, sizeof(out), s);

	check(n > 0 && (size_t)n == used);
	check(memcmp(out, in, used) == 0);
}

/* Section-id table: START/FULL bind an id, PART/END look it up. */
struct binding {
	uint32_t id;
	char idstr[SAVEVM_NAME_MAX + 1];
};

static const char *lookup(const struct binding *t, size_t n, uint32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (t[i].id == id)
			return t[i].idstr;
	return NULL;
}

/* Read one section's payload at pos; returns the new position or 0 to stop. */
static size_t payload(const uint8_t *data, size_t size, size_t pos, const struct savevm_section *s,
		      const char *idstr)
{
	struct savevm_section fixed = *s;
	uint32_t skip;
	size_t used = 0;

	if (strcmp(idstr, "ram") == 0) {
		int r = savevm_ram_decode(data + pos, size - pos, s->type == SAVEVM_START, &used);

		return check_result(r, used, size - pos) ? pos + used : 0;
	}
	snprintf(fixed.name, sizeof(fixed.name), "%s", idstr);
	if (savevm_skip_size(&fixed, &skip) == 0) {
		check(skip == SAVEVM_TIMER_PAYLOAD || skip == SAVEVM_GLOBALSTATE_PAYLOAD);
		return size - pos >= skip ? pos + skip : 0;
	}
	for (;;) {
		struct wire_record rec;
		int r = wire_rec_decode(data + pos, size - pos, WIRE_MIN_CHUNK_SIZE, &rec, &used);

		if (!check_result(r, used, size - pos))
			return 0;
		pos += used;
		if (rec.kind == WIRE_REC_EOS)
			return pos;
	}
}

static void walk(const uint8_t *data, size_t size)
{
	struct binding table[MAX_SECTIONS];
	size_t nbound = 0, pos = 0, used = 0;
	int r;

	r = savevm_header_decode(data, size, &used);
	if (!check_result(r, used, size))
		return;
	check(used == SAVEVM_HDR_LEN);
	pos = used;

	while (pos < size) {
		struct savevm_section s;
		const char *idstr;

		r = savevm_section_decode(data + pos, size - pos, &s, &used);
		if (!check_result(r, used, size - pos))
			return;
		check_reencode(data + pos, used, &s);
		pos += used;

		switch (s.type) {
		case SAVEVM_EOF:
		case SAVEVM_CONFIGURATION:
			continue;
		case SAVEVM_VMDESCRIPTION:
			check(s.len <= SAVEVM_VMDESC_MAX);
			if (size - pos < s.len)
				return;
			pos += s.len;
			continue;
		case SAVEVM_START:
		case SAVEVM_FULL:
			check(s.name[0] != '\0' && strlen(s.name) <= SAVEVM_NAME_MAX);
			if (nbound == MAX_SECTIONS)
				return;
			table[nbound].id = s.section_id;
			memcpy(table[nbound].idstr, s.name, sizeof(s.name));
			idstr = table[nbound++].idstr;
			break;
		case SAVEVM_PART:
		case SAVEVM_END:
			idstr = lookup(table, nbound, s.section_id);
			if (!idstr)
				return; /* the engine refuses unknown ids */
			break;
		default:
			check(0); /* no other type decodes */
			return;
		}

		pos = payload(data, size, pos, &s, idstr);
		if (pos == 0)
			return;
		r = savevm_footer_decode(data + pos, size - pos, s.section_id, idstr, &used);
		if (!check_result(r, used, size - pos))
			return;
		check(used == SAVEVM_FOOTER_LEN);
		pos += used;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct savevm_section s;
	size_t used = 0;
	int r;

	walk(data, size);

	/* Each decoder on its own, from the first byte. */
	r = savevm_section_decode(data, size, &s, &used);
	if (check_result(r, used, size))
		check_reencode(data, used, &s);
	r = savevm_footer_decode(data, size, 1, "block", &used);
	check_result(r, used, size);
	r = savevm_ram_decode(data, size, true, &used);
	check_result(r, used, size);
	r = savevm_ram_decode(data, size, false, &used);
	check_result(r, used, size);
	return 0;
}
