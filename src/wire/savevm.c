/* SPDX-License-Identifier: MIT */
/*
 * QEMU savevm envelope: encode and decode the file header, section headers,
 * footers, EOF, VMDESCRIPTION and the RAM-less "ram" payload (see savevm.h
 * for the layout).  The QEMU-format sender and receiver frame their block
 * records with these; the records themselves are record.c's.
 *
 * Pure functions over caller buffers: no I/O, no allocation, no state.  Each
 * decoder, given a prefix, says how many bytes it needs in total, and the
 * caller calls again with at least that many.
 */
#include "savevm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "common/error.h"
#include "common/util.h"

/* Offsets inside a START/FULL header: type, be32 id, u8 n, idstr, ... */
#define SV_ID_POS    1
#define SV_NLEN_POS  5
#define SV_NAME_POS  6
#define SV_SHORT_LEN 5 /* type + be32: PART/END/CONFIGURATION/VMDESCRIPTION */
#define SV_TAIL_LEN  8 /* be32 instance_id + be32 version_id */

#define RAM_WORD_LEN 8

/* ------------------------------------------------------------------------ */
/* Names                                                                    */

const char *savevm_type_name(uint8_t type)
{
	switch (type) {
	case SAVEVM_EOF:
		return "EOF";
	case SAVEVM_START:
		return "START";
	case SAVEVM_PART:
		return "PART";
	case SAVEVM_END:
		return "END";
	case SAVEVM_FULL:
		return "FULL";
	case SAVEVM_SUBSECTION:
		return "SUBSECTION";
	case SAVEVM_VMDESCRIPTION:
		return "VMDESCRIPTION";
	case SAVEVM_CONFIGURATION:
		return "CONFIGURATION";
	case SAVEVM_COMMAND:
		return "COMMAND";
	case SAVEVM_FOOTER:
		return "FOOTER";
	}
	return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Encode                                                                   */

static int room(size_t cap, size_t need, const char *what)
{
	if (cap < need)
		return err_set(ENOSPC,
			       "savevm: encode %s: buffer of %zu bytes is too small (need %zu)",
			       what, cap, need);
	return 0;
}

/* Length of a name to encode, or -EINVAL. */
static int name_len(const char *what, const char *name)
{
	size_t n = strnlen(name, SAVEVM_NAME_MAX + 1);

	if (n == 0)
		return err_set(EINVAL, "savevm: encode %s: empty name", what);
	if (n > SAVEVM_NAME_MAX)
		return err_set(EINVAL, "savevm: encode %s: name longer than %d bytes", what,
			       SAVEVM_NAME_MAX);
	return (int)n;
}

int savevm_header_encode(uint8_t *buf, size_t cap)
{
	int r = room(cap, SAVEVM_HDR_LEN, "header");

	if (r < 0)
		return r;
	put_be32(buf, SAVEVM_MAGIC);
	put_be32(buf + 4, SAVEVM_VERSION);
	return SAVEVM_HDR_LEN;
}

int savevm_section_encode(uint8_t *buf, size_t cap, const struct savevm_section *s)
{
	const char *what = savevm_type_name((uint8_t)s->type);
	size_t need;
	int n, r;

	switch (s->type) {
	case SAVEVM_EOF:
		r = room(cap, 1, what);
		if (r < 0)
			return r;
		buf[0] = SAVEVM_EOF;
		return 1;
	case SAVEVM_START:
	case SAVEVM_FULL:
		n = name_len(what, s->name);
		if (n < 0)
			return n;
		need = SV_NAME_POS + (size_t)n + SV_TAIL_LEN;
		r = room(cap, need, what);
		if (r < 0)
			return r;
		buf[0] = (uint8_t)s->type;
		put_be32(buf + SV_ID_POS, s->section_id);
		buf[SV_NLEN_POS] = (uint8_t)n;
		memcpy(buf + SV_NAME_POS, s->name, (size_t)n);
		put_be32(buf + SV_NAME_POS + n, s->instance_id);
		put_be32(buf + SV_NAME_POS + n + 4, s->version_id);
		return (int)need;
	case SAVEVM_PART:
	case SAVEVM_END:
		r = room(cap, SV_SHORT_LEN, what);
		if (r < 0)
			return r;
		buf[0] = (uint8_t)s->type;
		put_be32(buf + SV_ID_POS, s->section_id);
		return SV_SHORT_LEN;
	case SAVEVM_CONFIGURATION:
		n = name_len(what, s->name);
		if (n < 0)
			return n;
		r = room(cap, SV_SHORT_LEN + (size_t)n, what);
		if (r < 0)
			return r;
		buf[0] = SAVEVM_CONFIGURATION;
		put_be32(buf + 1, (uint32_t)n);
		memcpy(buf + SV_SHORT_LEN, s->name, (size_t)n);
		return SV_SHORT_LEN + n;
	case SAVEVM_VMDESCRIPTION:
		if (s->len > SAVEVM_VMDESC_MAX)
			return err_set(EINVAL,
				       "savevm: encode VMDESCRIPTION: length %" PRIu32
				       " exceeds the maximum %u",
				       s->len, SAVEVM_VMDESC_MAX);
		r = room(cap, SV_SHORT_LEN, what);
		if (r < 0)
			return r;
		buf[0] = SAVEVM_VMDESCRIPTION;
		put_be32(buf + 1, s->len);
		return SV_SHORT_LEN;
	case SAVEVM_SUBSECTION:
	case SAVEVM_COMMAND:
	case SAVEVM_FOOTER:
		break;
	}
	return err_set(EINVAL, "savevm: encode: cannot encode section type 0x%02x (%s)",
		       (unsigned int)s->type, what);
}

int savevm_footer_encode(uint8_t *buf, size_t cap, uint32_t section_id)
{
	int r = room(cap, SAVEVM_FOOTER_LEN, "footer");

	if (r < 0)
		return r;
	buf[0] = SAVEVM_FOOTER;
	put_be32(buf + 1, section_id);
	return SAVEVM_FOOTER_LEN;
}

int savevm_vmdesc_encode(uint8_t *buf, size_t cap, const char *json, size_t json_len)
{
	int r;

	if (json_len > SAVEVM_VMDESC_MAX)
		return err_set(EINVAL,
			       "savevm: encode VMDESCRIPTION: length %zu exceeds the maximum %u",
			       json_len, SAVEVM_VMDESC_MAX);
	r = room(cap, SV_SHORT_LEN + json_len, "VMDESCRIPTION");
	if (r < 0)
		return r;
	buf[0] = SAVEVM_VMDESCRIPTION;
	put_be32(buf + 1, (uint32_t)json_len);
	if (json_len)
		memcpy(buf + SV_SHORT_LEN, json, json_len);
	return (int)(SV_SHORT_LEN + json_len);
}

/* ------------------------------------------------------------------------ */
/* Decode                                                                   */

/* -EAGAIN with *used = need when fewer than need bytes are there. */
#define NEED(len, need, used)                                                                      \
	do {                                                                                       \
		if ((len) < (need)) {                                                              \
			*(used) = (need);                                                          \
			return -EAGAIN;                                                            \
		}                                                                                  \
	} while (0)

int savevm_header_decode(const uint8_t *buf, size_t len, size_t *used)
{
	uint32_t magic, version;

	NEED(len, 4, used);
	magic = get_be32(buf);
	if (magic != SAVEVM_MAGIC)
		return err_set(EBADMSG,
			       "savevm: not a QEMU migration stream (magic 0x%08" PRIx32
			       ", expected 0x%08x \"QEVM\")",
			       magic, SAVEVM_MAGIC);
	NEED(len, SAVEVM_HDR_LEN, used);
	version = get_be32(buf + 4);
	if (version != SAVEVM_VERSION)
		return err_set(EBADMSG, "savevm: unsupported version %" PRIu32 " (expected %u)",
			       version, SAVEVM_VERSION);
	*used = SAVEVM_HDR_LEN;
	return 0;
}

/* Copy a name of n bytes at p into s->name, refusing a NUL or a control
 * character inside it (names end up in messages: DESIGN.md rule 8). */
static int take_name(struct savevm_section *s, const uint8_t *p, size_t n, const char *what)
{
	char shown[STR_ESCAPE_CAP(sizeof(s->name))];

	if (memchr(p, '\0', n))
		return err_set(EBADMSG, "savevm: %s contains a NUL byte", what);
	memcpy(s->name, p, n);
	s->name[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return err_set(EBADMSG, "savevm: %s '%s' has control characters", what,
				       str_escape(shown, sizeof(shown), s->name));
	return 0;
}

static int decode_start(const uint8_t *buf, size_t len, struct savevm_section *s, size_t *used)
{
	const char *what = savevm_type_name(buf[0]);
	size_t n, need;
	int r;

	NEED(len, SV_NAME_POS, used);
	s->section_id = get_be32(buf + SV_ID_POS);
	n = buf[SV_NLEN_POS];
	if (n == 0)
		return err_set(EBADMSG, "savevm: %s section %" PRIu32 " has an empty idstr", what,
			       s->section_id);
	need = SV_NAME_POS + n + SV_TAIL_LEN;
	NEED(len, need, used);
	r = take_name(s, buf + SV_NAME_POS, n, "section idstr");
	if (r < 0)
		return r;
	s->instance_id = get_be32(buf + SV_NAME_POS + n);
	s->version_id = get_be32(buf + SV_NAME_POS + n + 4);
	*used = need;
	return 0;
}

static int decode_config(const uint8_t *buf, size_t len, struct savevm_section *s, size_t *used)
{
	uint32_t n;
	int r;

	NEED(len, SV_SHORT_LEN, used);
	n = get_be32(buf + 1);
	if (n == 0)
		return err_set(EBADMSG, "savevm: configuration has an empty machine type");
	if (n > SAVEVM_NAME_MAX)
		return err_set(EBADMSG,
			       "savevm: configuration machine type of %" PRIu32
			       " bytes exceeds the maximum %d",
			       n, SAVEVM_NAME_MAX);
	NEED(len, SV_SHORT_LEN + (size_t)n, used);
	r = take_name(s, buf + SV_SHORT_LEN, n, "configuration machine type");
	if (r < 0)
		return r;
	s->len = n;
	*used = SV_SHORT_LEN + (size_t)n;
	return 0;
}

int savevm_section_decode(const uint8_t *buf, size_t len, struct savevm_section *s, size_t *used)
{
	uint8_t type;

	NEED(len, 1, used);
	type = buf[0];
	memset(s, 0, sizeof(*s));
	s->type = (enum savevm_type)type;

	switch (type) {
	case SAVEVM_EOF:
		*used = 1;
		return 0;
	case SAVEVM_START:
	case SAVEVM_FULL:
		return decode_start(buf, len, s, used);
	case SAVEVM_PART:
	case SAVEVM_END:
		NEED(len, SV_SHORT_LEN, used);
		s->section_id = get_be32(buf + SV_ID_POS);
		*used = SV_SHORT_LEN;
		return 0;
	case SAVEVM_CONFIGURATION:
		return decode_config(buf, len, s, used);
	case SAVEVM_VMDESCRIPTION:
		NEED(len, SV_SHORT_LEN, used);
		s->len = get_be32(buf + 1);
		if (s->len > SAVEVM_VMDESC_MAX)
			return err_set(EBADMSG,
				       "savevm: VMDESCRIPTION of %" PRIu32
				       " bytes exceeds the maximum %u",
				       s->len, SAVEVM_VMDESC_MAX);
		*used = SV_SHORT_LEN;
		return 0;
	case SAVEVM_SUBSECTION:
	case SAVEVM_COMMAND:
	case SAVEVM_FOOTER:
		return err_set(EBADMSG, "savevm: unexpected section type 0x%02x (%s) at top level",
			       type, savevm_type_name(type));
	}
	return err_set(EBADMSG, "savevm: unknown section type 0x%02x", type);
}

int savevm_footer_decode(const uint8_t *buf, size_t len, uint32_t section_id, const char *idstr,
			 size_t *used)
{
	uint32_t id;

	NEED(len, 1, used);
	if (buf[0] != SAVEVM_FOOTER)
		return err_set(EBADMSG,
			       "savevm: missing section footer for %s (section %" PRIu32
			       "): found byte 0x%02x",
			       idstr ? idstr : "?", section_id, buf[0]);
	NEED(len, SAVEVM_FOOTER_LEN, used);
	id = get_be32(buf + 1);
	if (id != section_id)
		return err_set(EBADMSG,
			       "savevm: section footer for %s (section %" PRIu32
			       ") carries section id %" PRIu32,
			       idstr ? idstr : "?", section_id, id);
	*used = SAVEVM_FOOTER_LEN;
	return 0;
}

int savevm_ram_decode(const uint8_t *buf, size_t len, bool start, size_t *used)
{
	size_t pos = 0;
	uint64_t word;

	if (start) {
		NEED(len, RAM_WORD_LEN, used);
		word = get_be64(buf);
		if ((word & SAVEVM_RAM_FLAG_MASK) != SAVEVM_RAM_F_MEM_SIZE)
			return err_set(EBADMSG,
				       "savevm: ram START must begin with MEM_SIZE, found word "
				       "0x%016" PRIx64,
				       word);
		if (word & ~(uint64_t)SAVEVM_RAM_FLAG_MASK)
			return err_set(ENOTSUP,
				       "savevm: RAM migration is not supported: blkmig carries "
				       "block devices only (the source has %" PRIu64
				       " bytes of RAM)",
				       word & ~(uint64_t)SAVEVM_RAM_FLAG_MASK);
		pos = RAM_WORD_LEN;
	}
	NEED(len, pos + RAM_WORD_LEN, used);
	word = get_be64(buf + pos);
	if (word != SAVEVM_RAM_F_EOS)
		return err_set(EBADMSG,
			       "savevm: ram: unexpected word 0x%016" PRIx64
			       " (flags 0x%03x), expected EOS",
			       word, (unsigned int)(word & SAVEVM_RAM_FLAG_MASK));
	*used = pos + RAM_WORD_LEN;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Fixed-size sections                                                      */

int savevm_skip_size(const struct savevm_section *s, uint32_t *size)
{
	static const struct {
		const char *idstr;
		uint32_t version;
		uint32_t size;
	} fixed[] = {
		{ "timer", SAVEVM_TIMER_VERSION, SAVEVM_TIMER_PAYLOAD },
		{ "globalstate", SAVEVM_GLOBALSTATE_VERSION, SAVEVM_GLOBALSTATE_PAYLOAD },
	};

	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) {
		if (strcmp(s->name, fixed[i].idstr) != 0)
			continue;
		if (s->type != SAVEVM_FULL || s->version_id != fixed[i].version)
			return err_set(ENOTSUP,
				       "savevm: %s section %s version %" PRIu32
				       " is not supported (expected FULL version %" PRIu32 ")",
				       savevm_type_name((uint8_t)s->type), s->name, s->version_id,
				       fixed[i].version);
		*size = fixed[i].size;
		return 0;
	}
	return err_set(ENOENT, "savevm: section %s has no known fixed size", s->name);
}
