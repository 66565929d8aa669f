/* SPDX-License-Identifier: MIT */
/*
 * QEMU's savevm envelope (the migration stream of QEMU 7.2, as described in
 * QEMU-STREAM.md): file header, sections, footers, EOF and the trailing
 * VMDESCRIPTION.  Pure encode/decode over buffers; no I/O, no allocation, no
 * state.  The block records inside "block" sections are record.h's business
 * (with chunk size WIRE_QEMU_CHUNK_SIZE); this module only frames them.
 *
 * Stream layout (all integers big-endian; "counted string" = u8 n, n bytes):
 *
 *   +-----------------+-----------+
 *   | be32 0x5145564D | be32 3    |  magic "QEVM", version (2 is refused)
 *   +-----------------+-----------+
 *   | 0x07 | be32 n | n bytes      |  CONFIGURATION: machine type ("none");
 *   +------+--------+--------------+  no footer
 *   sections, each:
 *   +------+--------------+------+--------+------------------+-----------------+
 *   | 0x01 | be32 sect_id | u8 n | n idstr| be32 instance_id | be32 version_id |
 *   +------+--------------+------+--------+------------------+-----------------+
 *     START (0x01) or FULL (0x04): binds sect_id to (idstr, instance)
 *   +------+--------------+
 *   | 0x02 | be32 sect_id |  PART (0x02) or END (0x03)
 *   +------+--------------+
 *   | payload ...          |  block records, ram words, fixed-size state
 *   +------+--------------+
 *   | 0x7e | be32 sect_id |  footer, after every section payload
 *   +------+--------------+
 *   +------+
 *   | 0x00 |                   EOF
 *   +------+--------+-------------------+
 *   | 0x06 | be32 n | n bytes JSON text |  VMDESCRIPTION, after EOF
 *   +------+--------+-------------------+
 *
 * Payloads a receiver must understand without the JSON (which arrives last):
 *   "ram"          START: be64 0x04 (MEM_SIZE, total 0), be64 0x10 (EOS);
 *                  PART/END: be64 0x10.  A non-zero total means the source
 *                  migrates RAM, which blkmig refuses.
 *   "timer"        FULL version 2: 24 bytes
 *   "globalstate"  FULL version 1: be32 size + 100-byte run-state buffer,
 *                  104 bytes in all
 */
#ifndef BLKMIG_WIRE_SAVEVM_H
#define BLKMIG_WIRE_SAVEVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SAVEVM_MAGIC   0x5145564DU /* "QEVM" */
#define SAVEVM_VERSION 3U
#define SAVEVM_HDR_LEN 8 /* magic + version */

/* Section type bytes.  When you add one the decoder accepts, also update
 * savevm_section_decode(), savevm_section_encode() and the name table. */
enum savevm_type {
	SAVEVM_EOF = 0x00,
	SAVEVM_START = 0x01,
	SAVEVM_PART = 0x02,
	SAVEVM_END = 0x03,
	SAVEVM_FULL = 0x04,
	SAVEVM_SUBSECTION = 0x05,
	SAVEVM_VMDESCRIPTION = 0x06,
	SAVEVM_CONFIGURATION = 0x07,
	SAVEVM_COMMAND = 0x08,
	SAVEVM_FOOTER = 0x7e,
};

#define SAVEVM_NAME_MAX	  255	     /* idstr and machine name, bytes */
#define SAVEVM_VMDESC_MAX (1U << 20) /* largest VMDESCRIPTION JSON accepted */
#define SAVEVM_FOOTER_LEN 5	     /* 0x7e + be32 section_id */

/* The longest section header: START/FULL with a 255-byte idstr. */
#define SAVEVM_SECTION_HDR_MAX (1 + 4 + 1 + SAVEVM_NAME_MAX + 4 + 4)

/* "ram" section words: flags live in the low 12 bits (below the smallest
 * target page), the rest is an address or, for MEM_SIZE, the RAM total. */
#define SAVEVM_RAM_F_MEM_SIZE  0x04U
#define SAVEVM_RAM_F_EOS       0x10U
#define SAVEVM_RAM_FLAG_MASK   0xfffU
#define SAVEVM_RAM_START_LEN   16 /* MEM_SIZE word + EOS word */
#define SAVEVM_RAM_ITERATE_LEN 8  /* EOS word */

/* Fixed payload sizes of the FULL sections a -M none source sends. */
#define SAVEVM_TIMER_VERSION	   2U
#define SAVEVM_TIMER_PAYLOAD	   24U
#define SAVEVM_GLOBALSTATE_VERSION 1U
#define SAVEVM_GLOBALSTATE_PAYLOAD (4U + 100U) /* be32 size + runstate[100] */

/*
 * One decoded section header (or the item to encode).  Which fields matter
 * depends on type:
 *   EOF            none
 *   START, FULL    section_id, name (idstr), instance_id, version_id
 *   PART, END      section_id
 *   CONFIGURATION  name (machine type)
 *   VMDESCRIPTION  len (JSON bytes that follow the header)
 * The decoder zeroes the fields a type does not use.
 */
struct savevm_section {
	enum savevm_type type;
	uint32_t section_id;
	uint32_t instance_id;
	uint32_t version_id;
	uint32_t len;
	char name[SAVEVM_NAME_MAX + 1]; /* NUL-terminated */
};

/* ------------------------------------------------------------------------ */
/* Encoders                                                                 */

/*
 * Each encoder writes one item into buf of capacity cap and returns its
 * length, or -ENOSPC (buffer too small) / -EINVAL (unencodable item), with
 * err_set.  Nothing is written on failure.  Names are taken up to their NUL
 * and must be 1..SAVEVM_NAME_MAX bytes.
 */
int savevm_header_encode(uint8_t *buf, size_t cap);

/*
 * The section header of s: EOF, START/FULL, PART/END, CONFIGURATION (the
 * whole section, s->name being the machine type) or VMDESCRIPTION (type and
 * length only; s->len <= SAVEVM_VMDESC_MAX, the caller sends the JSON).
 * Unused fields are ignored.  SUBSECTION, COMMAND and FOOTER are -EINVAL.
 */
int savevm_section_encode(uint8_t *buf, size_t cap, const struct savevm_section *s);

int savevm_footer_encode(uint8_t *buf, size_t cap, uint32_t section_id);

/* A whole VMDESCRIPTION: header and json_len bytes of JSON text. */
int savevm_vmdesc_encode(uint8_t *buf, size_t cap, const char *json, size_t json_len);

/* ------------------------------------------------------------------------ */
/* Decoders                                                                 */

/*
 * All decoders read from buf[0..len) and return:
 *  - 0: the item is decoded and *used is its length (never more than len).
 *  - -EAGAIN: buf holds a valid prefix; *used is the total number of bytes
 *    needed before calling again (always more than len).
 *  - -EBADMSG: malformed input, with a message via err_set naming what was
 *    wrong.  Errors are reported as soon as the bytes allow.
 *  - savevm_ram_decode() only: -ENOTSUP when the source migrates RAM.
 * Outputs other than *used are unspecified on failure.
 */

/* File header: magic "QEVM", then version 3. */
int savevm_header_decode(const uint8_t *buf, size_t len, size_t *used);

/*
 * One top-level item's header (see struct savevm_section): EOF, START,
 * PART, END, FULL, CONFIGURATION (including its name) or VMDESCRIPTION (the
 * type and length; the JSON is the caller's to skip).  -EBADMSG for
 * SUBSECTION, COMMAND or FOOTER at top level, an unknown type, an empty
 * name, a name with a NUL byte, a machine name longer than SAVEVM_NAME_MAX or
 * a VMDESCRIPTION longer than SAVEVM_VMDESC_MAX.
 *
 * Section ids are not checked here: binding ids to idstrs is the caller's.
 */
int savevm_section_decode(const uint8_t *buf, size_t len, struct savevm_section *s, size_t *used);

/*
 * The footer after a section payload: 0x7e, then section_id.  idstr (may be
 * NULL) only names the section in the message, e.g. "missing section footer
 * for block (section 1)".
 */
int savevm_footer_decode(const uint8_t *buf, size_t len, uint32_t section_id, const char *idstr,
			 size_t *used);

/*
 * The whole payload of a RAM-less "ram" section: for START (start = true)
 * MEM_SIZE with total 0 then EOS; otherwise EOS alone.  A MEM_SIZE word with
 * a non-zero total is -ENOTSUP ("RAM migration is not supported ...");
 * any other word is -EBADMSG.
 */
int savevm_ram_decode(const uint8_t *buf, size_t len, bool start, size_t *used);

/*
 * The payload size of a FULL section a receiver skips unread ("timer"
 * version 2, "globalstate" version 1): 0 with *size set.  -ENOTSUP for one of
 * those idstrs with another version or section type, -ENOENT for any other
 * section; both with a message.
 */
int savevm_skip_size(const struct savevm_section *s, uint32_t *size);

/* Name of a section type byte ("START", ...), or "unknown". */
const char *savevm_type_name(uint8_t type);

#endif
