/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for the QEMU savevm envelope codec (src/wire/savevm.c): golden
 * bytes written out from QEMU-STREAM.md for every encoder, a whole minimal
 * stream that a QEMU 7.2 -M none destination accepts, built and decoded back
 * step by step, every -EAGAIN prefix of each decoder, and each malformed
 * input with its exact message.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"
#include "wire/record.h"
#include "wire/savevm.h"

#define VMDESC_JSON "{\"page_size\": 4096, \"devices\": []}"

static void expect_error(int r, int err, const char *msg)
{
	assert_int_equal(r, -err);
	assert_string_equal(err_msg(), msg);
}

/* Which decoder a test drives; the footer and ram decoders take extra
 * arguments, fixed here to what the tests below use. */
enum dec {
	DEC_HEADER,
	DEC_SECTION,
	DEC_FOOTER_1, /* savevm_footer_decode(section 1, "block") */
	DEC_RAM_START,
	DEC_RAM_ITER,
};

/* Decode exactly len bytes copied to the heap, so an over-read is caught. */
static int decode_exact(enum dec d, const uint8_t *bytes, size_t len, struct savevm_section *s,
			size_t *used)
{
	uint8_t *b = malloc(len ? len : 1);
	int r = -EINVAL;

	assert_non_null(b);
	memcpy(b, bytes, len);
	err_clear();
	*used = 0;
	switch (d) {
	case DEC_HEADER:
		r = savevm_header_decode(b, len, used);
		break;
	case DEC_SECTION:
		r = savevm_section_decode(b, len, s, used);
		break;
	case DEC_FOOTER_1:
		r = savevm_footer_decode(b, len, 1, "block", used);
		break;
	case DEC_RAM_START:
		r = savevm_ram_decode(b, len, true, used);
		break;
	case DEC_RAM_ITER:
		r = savevm_ram_decode(b, len, false, used);
		break;
	}
	free(b);
	return r;
}

/* Every proper prefix is -EAGAIN asking for more than it has and no more
 * than the whole item; the whole item decodes with *used == len. */
static void check_prefixes(enum dec d, const uint8_t *bytes, size_t len)
{
	struct savevm_section s;
	size_t used;

	for (size_t k = 0; k < len; k++) {
		int r = decode_exact(d, bytes, k, &s, &used);

		assert_int_equal(r, -EAGAIN);
		assert_true(used > k);
		assert_true(used <= len);
	}
	assert_int_equal(decode_exact(d, bytes, len, &s, &used), 0);
	assert_int_equal(used, len);
}

/* ------------------------------------------------------------------------ */
/* Golden bytes                                                             */

/* clang-format off */
static const uint8_t golden_header[] = {
	0x51, 0x45, 0x56, 0x4d, /* "QEVM" */
	0x00, 0x00, 0x00, 0x03,
};

static const uint8_t golden_config[] = {
	0x07, 0x00, 0x00, 0x00, 0x04, 'n', 'o', 'n', 'e',
};

static const uint8_t golden_start_block[] = {
	0x01,                                   /* START */
	0x00, 0x00, 0x00, 0x01,                 /* section id 1 */
	0x05, 'b', 'l', 'o', 'c', 'k',
	0x00, 0x00, 0x00, 0x00,                 /* instance 0 */
	0x00, 0x00, 0x00, 0x01,                 /* version 1 */
};

static const uint8_t golden_full_timer[] = {
	0x04,                                   /* FULL */
	0x00, 0x00, 0x01, 0x02,                 /* section id 258 */
	0x05, 't', 'i', 'm', 'e', 'r',
	0x00, 0x00, 0x00, 0x07,                 /* instance 7 */
	0x00, 0x00, 0x00, 0x02,                 /* version 2 */
};

static const uint8_t golden_part[] = { 0x02, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t golden_end[] = { 0x03, 0xde, 0xad, 0xbe, 0xef };
static const uint8_t golden_footer[] = { 0x7e, 0x00, 0x00, 0x00, 0x01 };
static const uint8_t golden_eof[] = { 0x00 };

static const uint8_t golden_vmdesc[] = {
	0x06, 0x00, 0x00, 0x00, 0x22,           /* 34 bytes of JSON */
	'{', '"', 'p', 'a', 'g', 'e', '_', 's', 'i', 'z', 'e', '"', ':', ' ',
	'4', '0', '9', '6', ',', ' ', '"', 'd', 'e', 'v', 'i', 'c', 'e', 's',
	'"', ':', ' ', '[', ']', '}',
};

static const uint8_t golden_ram_start[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, /* MEM_SIZE, total 0 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, /* EOS */
};

static const uint8_t golden_ram_iter[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
};

/* The minimal stream QEMU-STREAM.md says a 7.2 -M none destination accepts. */
static const uint8_t golden_stream[] = {
	0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x03,          /* header */
	0x07, 0x00, 0x00, 0x00, 0x04, 'n', 'o', 'n', 'e',        /* CONFIGURATION */
	/* START block, id 1, instance 0, version 1: EOS */
	0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 'b', 'l', 'o', 'c', 'k',
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,          /* EOS */
	0x7e, 0x00, 0x00, 0x00, 0x01,                            /* footer */
	/* PART block: a zero chunk at 1 MiB, EOS */
	0x02, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x09,
	0x06, 'd', 'r', 'i', 'v', 'e', '0',
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
	0x7e, 0x00, 0x00, 0x00, 0x01,
	/* END block: PROGRESS 100, EOS */
	0x03, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc8, 0x04,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,
	0x7e, 0x00, 0x00, 0x00, 0x01,
	0x00,                                                    /* EOF */
};
/* clang-format on */

static void set_section(struct savevm_section *s, enum savevm_type type, uint32_t id,
			const char *name, uint32_t instance, uint32_t version)
{
	memset(s, 0, sizeof(*s));
	s->type = type;
	s->section_id = id;
	s->instance_id = instance;
	s->version_id = version;
	snprintf(s->name, sizeof(s->name), "%s", name);
}

/* Encode s into a buffer of exactly the golden size and compare. */
static void check_encode(const struct savevm_section *s, const uint8_t *golden, size_t len)
{
	uint8_t buf[SAVEVM_SECTION_HDR_MAX];

	assert_true(len <= sizeof(buf));
	memset(buf, 0xaa, sizeof(buf));
	assert_int_equal(savevm_section_encode(buf, len, s), (int)len);
	assert_memory_equal(buf, golden, len);
	assert_int_equal(buf[len], 0xaa);
	/* One byte short is -ENOSPC and nothing is written. */
	memset(buf, 0xaa, sizeof(buf));
	err_clear();
	assert_int_equal(savevm_section_encode(buf, len - 1, s), -ENOSPC);
	assert_int_equal(buf[0], 0xaa);
}

/* Decode golden and compare the fields against want. */
static void check_decode(const uint8_t *golden, size_t len, const struct savevm_section *want)
{
	struct savevm_section s;
	size_t used;

	assert_int_equal(decode_exact(DEC_SECTION, golden, len, &s, &used), 0);
	assert_int_equal(used, len);
	assert_int_equal(s.type, want->type);
	assert_int_equal(s.section_id, want->section_id);
	assert_int_equal(s.instance_id, want->instance_id);
	assert_int_equal(s.version_id, want->version_id);
	assert_string_equal(s.name, want->name);
}

static void test_golden_header(void **state)
{
	uint8_t buf[SAVEVM_HDR_LEN];
	size_t used;

	(void)state;
	assert_int_equal(savevm_header_encode(buf, sizeof(buf)), SAVEVM_HDR_LEN);
	assert_memory_equal(buf, golden_header, sizeof(golden_header));
	expect_error(savevm_header_encode(buf, 7), ENOSPC,
		     "savevm: encode header: buffer of 7 bytes is too small (need 8)");
	assert_int_equal(
	    decode_exact(DEC_HEADER, golden_header, sizeof(golden_header), NULL, &used), 0);
	assert_int_equal(used, SAVEVM_HDR_LEN);
}

static void test_golden_config(void **state)
{
	struct savevm_section s, want;

	(void)state;
	set_section(&s, SAVEVM_CONFIGURATION, 99, "none", 5, 6); /* ids ignored */
	check_encode(&s, golden_config, sizeof(golden_config));
	set_section(&want, SAVEVM_CONFIGURATION, 0, "none", 0, 0);
	check_decode(golden_config, sizeof(golden_config), &want);
}

static void test_golden_start_full(void **state)
{
	struct savevm_section s;

	(void)state;
	set_section(&s, SAVEVM_START, 1, "block", 0, 1);
	check_encode(&s, golden_start_block, sizeof(golden_start_block));
	check_decode(golden_start_block, sizeof(golden_start_block), &s);

	set_section(&s, SAVEVM_FULL, 258, "timer", 7, 2);
	check_encode(&s, golden_full_timer, sizeof(golden_full_timer));
	check_decode(golden_full_timer, sizeof(golden_full_timer), &s);
}

static void test_golden_part_end_eof(void **state)
{
	struct savevm_section s, want;

	(void)state;
	set_section(&s, SAVEVM_PART, 1, "ignored", 3, 4);
	check_encode(&s, golden_part, sizeof(golden_part));
	set_section(&want, SAVEVM_PART, 1, "", 0, 0);
	check_decode(golden_part, sizeof(golden_part), &want);

	set_section(&s, SAVEVM_END, 0xdeadbeef, "", 0, 0);
	check_encode(&s, golden_end, sizeof(golden_end));
	check_decode(golden_end, sizeof(golden_end), &s);

	set_section(&s, SAVEVM_EOF, 0, "", 0, 0);
	check_encode(&s, golden_eof, sizeof(golden_eof));
	check_decode(golden_eof, sizeof(golden_eof), &s);
}

static void test_golden_footer(void **state)
{
	uint8_t buf[SAVEVM_FOOTER_LEN];
	size_t used;

	(void)state;
	assert_int_equal(savevm_footer_encode(buf, sizeof(buf), 1), SAVEVM_FOOTER_LEN);
	assert_memory_equal(buf, golden_footer, sizeof(golden_footer));
	expect_error(savevm_footer_encode(buf, 4, 1), ENOSPC,
		     "savevm: encode footer: buffer of 4 bytes is too small (need 5)");
	assert_int_equal(
	    decode_exact(DEC_FOOTER_1, golden_footer, sizeof(golden_footer), NULL, &used), 0);
	assert_int_equal(used, SAVEVM_FOOTER_LEN);
}

static void test_golden_vmdesc(void **state)
{
	const size_t json_len = strlen(VMDESC_JSON);
	struct savevm_section s;
	uint8_t buf[64];
	size_t used;

	(void)state;
	assert_int_equal(json_len, 34);
	assert_int_equal(savevm_vmdesc_encode(buf, sizeof(golden_vmdesc), VMDESC_JSON, json_len),
			 (int)sizeof(golden_vmdesc));
	assert_memory_equal(buf, golden_vmdesc, sizeof(golden_vmdesc));
	expect_error(savevm_vmdesc_encode(buf, sizeof(golden_vmdesc) - 1, VMDESC_JSON, json_len),
		     ENOSPC,
		     "savevm: encode VMDESCRIPTION: buffer of 38 bytes is too small (need 39)");

	/* The header-only encoder gives the same first five bytes. */
	memset(&s, 0, sizeof(s));
	s.type = SAVEVM_VMDESCRIPTION;
	s.len = (uint32_t)json_len;
	check_encode(&s, golden_vmdesc, 5);

	assert_int_equal(decode_exact(DEC_SECTION, golden_vmdesc, sizeof(golden_vmdesc), &s, &used),
			 0);
	assert_int_equal(used, 5);
	assert_int_equal(s.type, SAVEVM_VMDESCRIPTION);
	assert_int_equal(s.len, 34);
}

static void test_golden_ram(void **state)
{
	static const uint8_t eos_footer[] = { 0, 0, 0, 0, 0, 0, 0, 0x10, 0x7e, 0, 0, 0, 2 };
	size_t used;

	(void)state;
	assert_int_equal(
	    decode_exact(DEC_RAM_START, golden_ram_start, sizeof(golden_ram_start), NULL, &used),
	    0);
	assert_int_equal(used, SAVEVM_RAM_START_LEN);
	assert_int_equal(
	    decode_exact(DEC_RAM_ITER, golden_ram_iter, sizeof(golden_ram_iter), NULL, &used), 0);
	assert_int_equal(used, SAVEVM_RAM_ITERATE_LEN);
	/* Bytes after the payload are the caller's (the footer). */
	assert_int_equal(
	    savevm_ram_decode(golden_ram_start, sizeof(golden_ram_start), false, &used), -EBADMSG);
	assert_int_equal(savevm_ram_decode(eos_footer, sizeof(eos_footer), false, &used), 0);
	assert_int_equal(used, SAVEVM_RAM_ITERATE_LEN);
}

/* ------------------------------------------------------------------------ */
/* A whole stream                                                           */

static size_t put_section(uint8_t *buf, size_t pos, size_t cap, enum savevm_type type, uint32_t id,
			  const char *name, uint32_t version)
{
	struct savevm_section s;
	int n;

	set_section(&s, type, id, name, 0, version);
	n = savevm_section_encode(buf + pos, cap - pos, &s);
	assert_true(n > 0);
	return pos + (size_t)n;
}

static size_t put_record(uint8_t *buf, size_t pos, enum wire_rec_kind kind, uint64_t arg)
{
	struct wire_record rec;
	int n;

	memset(&rec, 0, sizeof(rec));
	rec.kind = kind;
	rec.offset = arg;
	rec.percent = arg;
	snprintf(rec.name, sizeof(rec.name), "drive0");
	n = wire_rec_encode_header(buf + pos, &rec);
	assert_true(n > 0);
	return pos + (size_t)n;
}

static size_t put_footer(uint8_t *buf, size_t pos, size_t cap, uint32_t id)
{
	int n = savevm_footer_encode(buf + pos, cap - pos, id);

	assert_int_equal(n, SAVEVM_FOOTER_LEN);
	return pos + (size_t)n;
}

static void test_minimal_stream_encode(void **state)
{
	uint8_t buf[512];
	size_t pos, cap = sizeof(buf);
	int n;

	(void)state;
	n = savevm_header_encode(buf, cap);
	assert_int_equal(n, SAVEVM_HDR_LEN);
	pos = (size_t)n;
	pos = put_section(buf, pos, cap, SAVEVM_CONFIGURATION, 0, "none", 0);

	pos = put_section(buf, pos, cap, SAVEVM_START, 1, "block", 1);
	pos = put_record(buf, pos, WIRE_REC_EOS, 0);
	pos = put_footer(buf, pos, cap, 1);

	pos = put_section(buf, pos, cap, SAVEVM_PART, 1, "", 0);
	pos = put_record(buf, pos, WIRE_REC_ZERO, WIRE_QEMU_CHUNK_SIZE);
	pos = put_record(buf, pos, WIRE_REC_EOS, 0);
	pos = put_footer(buf, pos, cap, 1);

	pos = put_section(buf, pos, cap, SAVEVM_END, 1, "", 0);
	pos = put_record(buf, pos, WIRE_REC_PROGRESS, 100);
	pos = put_record(buf, pos, WIRE_REC_EOS, 0);
	pos = put_footer(buf, pos, cap, 1);

	pos = put_section(buf, pos, cap, SAVEVM_EOF, 0, "", 0);

	assert_int_equal(pos, sizeof(golden_stream));
	assert_memory_equal(buf, golden_stream, sizeof(golden_stream));
}

/* Decode the block records of one section payload up to its EOS. */
static size_t read_records(const uint8_t *buf, size_t len, size_t pos, unsigned int *nrec)
{
	struct wire_record rec;
	size_t used;

	*nrec = 0;
	for (;;) {
		assert_int_equal(
		    wire_rec_decode(buf + pos, len - pos, WIRE_QEMU_CHUNK_SIZE, &rec, &used), 0);
		pos += used;
		(*nrec)++;
		if (rec.kind == WIRE_REC_EOS)
			return pos;
	}
}

static void test_minimal_stream_decode(void **state)
{
	static const enum savevm_type want[] = { SAVEVM_START, SAVEVM_PART, SAVEVM_END };
	static const unsigned int want_recs[] = { 1, 2, 2 };
	const uint8_t *b = golden_stream;
	const size_t len = sizeof(golden_stream);
	struct savevm_section s;
	char idstr[SAVEVM_NAME_MAX + 1] = "";
	unsigned int nrec;
	size_t pos = 0, used;

	(void)state;
	assert_int_equal(savevm_header_decode(b, len, &used), 0);
	pos += used;

	assert_int_equal(savevm_section_decode(b + pos, len - pos, &s, &used), 0);
	assert_int_equal(s.type, SAVEVM_CONFIGURATION);
	assert_string_equal(s.name, "none");
	pos += used;

	for (size_t i = 0; i < ARRAY_SIZE(want); i++) {
		assert_int_equal(savevm_section_decode(b + pos, len - pos, &s, &used), 0);
		assert_int_equal(s.type, want[i]);
		assert_int_equal(s.section_id, 1);
		if (s.type == SAVEVM_START) {
			assert_string_equal(s.name, "block");
			assert_int_equal(s.instance_id, 0);
			assert_int_equal(s.version_id, 1);
			snprintf(idstr, sizeof(idstr), "%s", s.name);
		}
		pos += used;
		pos = read_records(b, len, pos, &nrec);
		assert_int_equal(nrec, want_recs[i]);
		assert_int_equal(savevm_footer_decode(b + pos, len - pos, 1, idstr, &used), 0);
		pos += used;
	}

	assert_int_equal(savevm_section_decode(b + pos, len - pos, &s, &used), 0);
	assert_int_equal(s.type, SAVEVM_EOF);
	pos += used;
	assert_int_equal(pos, len);

	/* A stream cut anywhere before EOF asks for more at the point it stops:
	 * the last section-level decode on a truncated buffer is -EAGAIN. */
	assert_int_equal(savevm_section_decode(b + len, 0, &s, &used), -EAGAIN);
	assert_int_equal(used, 1);
}

/* ------------------------------------------------------------------------ */
/* Prefixes                                                                 */

static void test_prefixes(void **state)
{
	struct savevm_section s;
	uint8_t long_start[SAVEVM_SECTION_HDR_MAX];
	uint8_t long_config[5 + SAVEVM_NAME_MAX];

	(void)state;
	check_prefixes(DEC_HEADER, golden_header, sizeof(golden_header));
	check_prefixes(DEC_SECTION, golden_config, sizeof(golden_config));
	check_prefixes(DEC_SECTION, golden_start_block, sizeof(golden_start_block));
	check_prefixes(DEC_SECTION, golden_full_timer, sizeof(golden_full_timer));
	check_prefixes(DEC_SECTION, golden_part, sizeof(golden_part));
	check_prefixes(DEC_SECTION, golden_end, sizeof(golden_end));
	check_prefixes(DEC_SECTION, golden_eof, sizeof(golden_eof));
	check_prefixes(DEC_SECTION, golden_vmdesc, 5);
	check_prefixes(DEC_FOOTER_1, golden_footer, sizeof(golden_footer));
	check_prefixes(DEC_RAM_START, golden_ram_start, sizeof(golden_ram_start));
	check_prefixes(DEC_RAM_ITER, golden_ram_iter, sizeof(golden_ram_iter));

	/* The longest names. */
	memset(s.name, 'x', SAVEVM_NAME_MAX);
	s.name[SAVEVM_NAME_MAX] = '\0';
	s.type = SAVEVM_START;
	s.section_id = 7;
	s.instance_id = 1;
	s.version_id = 2;
	assert_int_equal(savevm_section_encode(long_start, sizeof(long_start), &s),
			 SAVEVM_SECTION_HDR_MAX);
	check_prefixes(DEC_SECTION, long_start, sizeof(long_start));
	s.type = SAVEVM_CONFIGURATION;
	assert_int_equal(savevm_section_encode(long_config, sizeof(long_config), &s),
			 (int)sizeof(long_config));
	check_prefixes(DEC_SECTION, long_config, sizeof(long_config));
}

/* ------------------------------------------------------------------------ */
/* Malformed input                                                          */

static void test_bad_header(void **state)
{
	static const uint8_t native[] = { 'B', 'L', 'K', 'M', 'I', 'G', '\r', '\n' };
	static const uint8_t v2[] = { 0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x02 };
	size_t used;

	(void)state;
	/* The magic is judged on its own, before the version arrives. */
	expect_error(decode_exact(DEC_HEADER, native, 4, NULL, &used), EBADMSG,
		     "savevm: not a QEMU migration stream (magic 0x424c4b4d, expected 0x5145564d "
		     "\"QEVM\")");
	expect_error(decode_exact(DEC_HEADER, v2, sizeof(v2), NULL, &used), EBADMSG,
		     "savevm: unsupported version 2 (expected 3)");
}

static void test_bad_section_type(void **state)
{
	static const struct {
		uint8_t type;
		const char *msg;
	} cases[] = {
		{ 0x05, "savevm: unexpected section type 0x05 (SUBSECTION) at top level" },
		{ 0x08, "savevm: unexpected section type 0x08 (COMMAND) at top level" },
		{ 0x7e, "savevm: unexpected section type 0x7e (FOOTER) at top level" },
		{ 0x09, "savevm: unknown section type 0x09" },
		{ 0x51, "savevm: unknown section type 0x51" },
		{ 0xff, "savevm: unknown section type 0xff" },
	};
	struct savevm_section s;
	size_t used;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		expect_error(decode_exact(DEC_SECTION, &cases[i].type, 1, &s, &used), EBADMSG,
			     cases[i].msg);
}

static void test_bad_footer(void **state)
{
	static const uint8_t missing[] = { 0x02, 0x00, 0x00, 0x00, 0x01 };
	static const uint8_t wrong[] = { 0x7e, 0x00, 0x00, 0x00, 0x02 };
	size_t used;

	(void)state;
	expect_error(decode_exact(DEC_FOOTER_1, missing, 1, NULL, &used), EBADMSG,
		     "savevm: missing section footer for block (section 1): found byte 0x02");
	expect_error(decode_exact(DEC_FOOTER_1, wrong, sizeof(wrong), NULL, &used), EBADMSG,
		     "savevm: section footer for block (section 1) carries section id 2");
	err_clear();
	expect_error(savevm_footer_decode(wrong, sizeof(wrong), 9, NULL, &used), EBADMSG,
		     "savevm: section footer for ? (section 9) carries section id 2");
}

static void test_bad_names_and_lengths(void **state)
{
	static const uint8_t cfg_long[] = { 0x07, 0x00, 0x00, 0x01, 0x00 };
	static const uint8_t cfg_huge[] = { 0x07, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t cfg_empty[] = { 0x07, 0x00, 0x00, 0x00, 0x00 };
	static const uint8_t cfg_nul[] = { 0x07, 0x00, 0x00, 0x00, 0x02, 'x', 0x00 };
	static const uint8_t start_empty[] = { 0x01, 0x00, 0x00, 0x00, 0x03, 0x00 };
	static const uint8_t full_nul[] = { 0x04, 0x00, 0x00, 0x00, 0x03, 0x02, 'a',  0x00,
					    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 };
	static const uint8_t full_esc[] = { 0x04, 0x00, 0x00, 0x00, 0x03, 0x02, 'a',  0x1b,
					    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01 };
	static const uint8_t cfg_nl[] = { 0x07, 0x00, 0x00, 0x00, 0x02, 'x', '\n' };
	static const uint8_t vmdesc_big[] = { 0x06, 0x00, 0x10, 0x00, 0x01 };
	static const uint8_t vmdesc_max[] = { 0x06, 0x00, 0x10, 0x00, 0x00 };
	struct savevm_section s;
	size_t used;

	(void)state;
	expect_error(decode_exact(DEC_SECTION, cfg_long, sizeof(cfg_long), &s, &used), EBADMSG,
		     "savevm: configuration machine type of 256 bytes exceeds the maximum 255");
	expect_error(decode_exact(DEC_SECTION, cfg_huge, sizeof(cfg_huge), &s, &used), EBADMSG,
		     "savevm: configuration machine type of 4294967295 bytes exceeds the "
		     "maximum 255");
	expect_error(decode_exact(DEC_SECTION, cfg_empty, sizeof(cfg_empty), &s, &used), EBADMSG,
		     "savevm: configuration has an empty machine type");
	expect_error(decode_exact(DEC_SECTION, cfg_nul, sizeof(cfg_nul), &s, &used), EBADMSG,
		     "savevm: configuration machine type contains a NUL byte");
	expect_error(decode_exact(DEC_SECTION, start_empty, sizeof(start_empty), &s, &used),
		     EBADMSG, "savevm: START section 3 has an empty idstr");
	expect_error(decode_exact(DEC_SECTION, full_nul, sizeof(full_nul), &s, &used), EBADMSG,
		     "savevm: section idstr contains a NUL byte");
	expect_error(decode_exact(DEC_SECTION, full_esc, sizeof(full_esc), &s, &used), EBADMSG,
		     "savevm: section idstr 'a\\x1b' has control characters");
	expect_error(decode_exact(DEC_SECTION, cfg_nl, sizeof(cfg_nl), &s, &used), EBADMSG,
		     "savevm: configuration machine type 'x\\x0a' has control characters");
	expect_error(decode_exact(DEC_SECTION, vmdesc_big, sizeof(vmdesc_big), &s, &used), EBADMSG,
		     "savevm: VMDESCRIPTION of 1048577 bytes exceeds the maximum 1048576");
	assert_int_equal(decode_exact(DEC_SECTION, vmdesc_max, sizeof(vmdesc_max), &s, &used), 0);
	assert_int_equal(s.len, SAVEVM_VMDESC_MAX);
}

static void test_bad_ram(void **state)
{
	/* 1 GiB of RAM | MEM_SIZE, then EOS. */
	static const uint8_t ram_1g[] = { 0x00, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x04,
					  0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10 };
	static const uint8_t flag_100[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00 };
	static const uint8_t page[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x08 };
	static const uint8_t eos_addr[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x10 };
	static const uint8_t start_flag[] = { 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,
					      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00 };
	size_t used;

	(void)state;
	/* Refused from the first word alone. */
	expect_error(decode_exact(DEC_RAM_START, ram_1g, 8, NULL, &used), ENOTSUP,
		     "savevm: RAM migration is not supported: blkmig carries block devices only "
		     "(the source has 1073741824 bytes of RAM)");
	expect_error(decode_exact(DEC_RAM_START, golden_ram_iter, 8, NULL, &used), EBADMSG,
		     "savevm: ram START must begin with MEM_SIZE, found word 0x0000000000000010");
	expect_error(decode_exact(DEC_RAM_START, start_flag, sizeof(start_flag), NULL, &used),
		     EBADMSG,
		     "savevm: ram: unexpected word 0x0000000000000200 (flags 0x200), expected EOS");
	expect_error(decode_exact(DEC_RAM_ITER, flag_100, sizeof(flag_100), NULL, &used), EBADMSG,
		     "savevm: ram: unexpected word 0x0000000000000100 (flags 0x100), expected EOS");
	expect_error(decode_exact(DEC_RAM_ITER, page, sizeof(page), NULL, &used), EBADMSG,
		     "savevm: ram: unexpected word 0x0000000000001008 (flags 0x008), expected EOS");
	expect_error(decode_exact(DEC_RAM_ITER, eos_addr, sizeof(eos_addr), NULL, &used), EBADMSG,
		     "savevm: ram: unexpected word 0x0000000000001010 (flags 0x010), expected EOS");
	/* MEM_SIZE belongs to START only. */
	expect_error(decode_exact(DEC_RAM_ITER, golden_ram_start, 8, NULL, &used), EBADMSG,
		     "savevm: ram: unexpected word 0x0000000000000004 (flags 0x004), expected EOS");
}

/* ------------------------------------------------------------------------ */
/* Encoder errors and helpers                                               */

static void test_encode_errors(void **state)
{
	struct savevm_section s;
	uint8_t buf[SAVEVM_SECTION_HDR_MAX];
	static char big_json[SAVEVM_VMDESC_MAX + 1];

	(void)state;
	set_section(&s, SAVEVM_START, 1, "", 0, 1);
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode START: empty name");
	memset(s.name, 'x', sizeof(s.name)); /* 256 bytes, no NUL */
	s.type = SAVEVM_FULL;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode FULL: name longer than 255 bytes");
	s.type = SAVEVM_CONFIGURATION;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode CONFIGURATION: name longer than 255 bytes");
	s.name[0] = '\0';
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode CONFIGURATION: empty name");

	set_section(&s, SAVEVM_START, 1, "block", 0, 1);
	expect_error(savevm_section_encode(buf, 18, &s), ENOSPC,
		     "savevm: encode START: buffer of 18 bytes is too small (need 19)");
	s.type = SAVEVM_EOF;
	expect_error(savevm_section_encode(buf, 0, &s), ENOSPC,
		     "savevm: encode EOF: buffer of 0 bytes is too small (need 1)");

	s.type = SAVEVM_SUBSECTION;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode: cannot encode section type 0x05 (SUBSECTION)");
	s.type = SAVEVM_COMMAND;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode: cannot encode section type 0x08 (COMMAND)");
	s.type = SAVEVM_FOOTER;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode: cannot encode section type 0x7e (FOOTER)");
	s.type = (enum savevm_type)0x42;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode: cannot encode section type 0x42 (unknown)");

	s.type = SAVEVM_VMDESCRIPTION;
	s.len = SAVEVM_VMDESC_MAX + 1;
	expect_error(savevm_section_encode(buf, sizeof(buf), &s), EINVAL,
		     "savevm: encode VMDESCRIPTION: length 1048577 exceeds the maximum 1048576");
	memset(big_json, '{', sizeof(big_json));
	expect_error(savevm_vmdesc_encode(buf, sizeof(buf), big_json, sizeof(big_json)), EINVAL,
		     "savevm: encode VMDESCRIPTION: length 1048577 exceeds the maximum 1048576");
	/* Empty JSON is encodable (and decodable). */
	assert_int_equal(savevm_vmdesc_encode(buf, 5, "", 0), 5);
}

static void test_skip_size(void **state)
{
	struct savevm_section s;
	uint32_t size = 0;

	(void)state;
	set_section(&s, SAVEVM_FULL, 3, "timer", 0, 2);
	assert_int_equal(savevm_skip_size(&s, &size), 0);
	assert_int_equal(size, 24);
	set_section(&s, SAVEVM_FULL, 4, "globalstate", 0, 1);
	assert_int_equal(savevm_skip_size(&s, &size), 0);
	assert_int_equal(size, 104);

	set_section(&s, SAVEVM_FULL, 3, "timer", 0, 3);
	expect_error(savevm_skip_size(&s, &size), ENOTSUP,
		     "savevm: FULL section timer version 3 is not supported (expected FULL "
		     "version 2)");
	set_section(&s, SAVEVM_START, 4, "globalstate", 0, 1);
	expect_error(savevm_skip_size(&s, &size), ENOTSUP,
		     "savevm: START section globalstate version 1 is not supported (expected "
		     "FULL version 1)");
	set_section(&s, SAVEVM_FULL, 5, "block", 0, 1);
	expect_error(savevm_skip_size(&s, &size), ENOENT,
		     "savevm: section block has no known fixed size");
}

static void test_type_names(void **state)
{
	(void)state;
	assert_string_equal(savevm_type_name(SAVEVM_EOF), "EOF");
	assert_string_equal(savevm_type_name(SAVEVM_CONFIGURATION), "CONFIGURATION");
	assert_string_equal(savevm_type_name(SAVEVM_VMDESCRIPTION), "VMDESCRIPTION");
	assert_string_equal(savevm_type_name(0x09), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden_header),
		cmocka_unit_test(test_golden_config),
		cmocka_unit_test(test_golden_start_full),
		cmocka_unit_test(test_golden_part_end_eof),
		cmocka_unit_test(test_golden_footer),
		cmocka_unit_test(test_golden_vmdesc),
		cmocka_unit_test(test_golden_ram),
		cmocka_unit_test(test_minimal_stream_encode),
		cmocka_unit_test(test_minimal_stream_decode),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_bad_header),
		cmocka_unit_test(test_bad_section_type),
		cmocka_unit_test(test_bad_footer),
		cmocka_unit_test(test_bad_names_and_lengths),
		cmocka_unit_test(test_bad_ram),
		cmocka_unit_test(test_encode_errors),
		cmocka_unit_test(test_skip_size),
		cmocka_unit_test(test_type_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
