/* SPDX-License-Identifier: MIT */
/*
 * One reader for both migration streams: a pull parser over a read
 * callback that yields typed items, for blkmig's native envelope
 * (native.h) and for QEMU 7.2's savevm stream (savevm.h), with the block
 * records (record.h) inside either.  The pure codecs decode each item; this
 * module adds what they leave to a caller: the framing and the walk (which
 * item may come next, section ids bound to their idstrs, what a section's
 * payload is, where a BLOCKS run or a "block" section ends), and a bound on
 * every length taken from the wire before anything is read or allocated for
 * it.  The destination engine, `blkmig inspect` and fuzz/fuzz-stream.c all
 * read through it, so what one calls malformed the others refuse too.
 *
 * Item sequences (one wire_stream_next() call per item):
 *
 *   native  HELLO, then messages: BLOCKS RECORD... (up to and including a
 *           RECORD of kind EOS), COMPLETE, ABORT, COMMIT, VERDICT, READY,
 *           ACK, ERROR, SYNCED, WACK, STATE, SUMS, DONE, EXPORT -- each only when
 * wire_stream_allow() lets that type through (every type by default) QEMU    QEMU_HEADER, CONFIG,
 * then sections: SECTION (START/FULL/PART/ END, with its idstr), its payload (RECORD... up to EOS
 * for "block"; "ram" and the fixed-size "timer"/"globalstate" payloads are checked and consumed
 * without an item), FOOTER; then EOF, optionally VMDESCRIPTION (its JSON is skipped by the next
 * call, which then yields END) both    END when the input ends cleanly between two top-level items
 *           (never inside one: that is a truncation error)
 *
 * Errors are negative errnos with one message (err_set) that names the
 * stream offset: -EBADMSG for malformed input (a compressed chunk included:
 * not announced by HELLO, not a zstd frame, a frame that does not state
 * exactly one chunk as its size, bytes after the frame, corrupt data), -EPROTONOSUPPORT for an
 * unsupported native version, -ENOTSUP for a QEMU stream that carries more
 * than block devices (RAM, devices), or whatever the read callback
 * returned.  Failure is sticky: every later call returns the same code.
 *
 * Not thread-safe: one reader at a time.  No I/O of its own: the callback
 * blocks (or not) as it likes.
 */
#ifndef BLKMIG_WIRE_STREAM_H
#define BLKMIG_WIRE_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "native.h"
#include "record.h"
#include "savevm.h"

/*
 * The bytes under a stream: read exactly len bytes into buf.  Returns 0
 * when all arrived; otherwise a negative errno with a message (err_set) and
 * *got = the bytes stored before the failure.  The end of the input is
 * -ECONNRESET (what xport_read() reports for a closed connection); with
 * *got == 0 at an item boundary the stream turns it into an END item.
 */
typedef int (*wire_read_fn)(void *user, void *buf, size_t len, size_t *got);

enum wire_stream_format {
	WIRE_STREAM_AUTO,   /* decided by the first bytes: "BLKMIG\r\n" or "QEVM" */
	WIRE_STREAM_NATIVE, /* docs/wire-format.md */
	WIRE_STREAM_QEMU,   /* QEMU-STREAM.md */
	/* The destination's half of a native connection, as its source reads
	 * it: framed messages (READY, ERROR, SYNCED, ACK, WACK) from the
	 * first byte, no HELLO.  wire_stream_format() says NATIVE. */
	WIRE_STREAM_NATIVE_REPLIES,
};

/* When you add an item kind, also update wire_item_name(). */
enum wire_item_kind {
	WIRE_ITEM_END,	       /* the input ended cleanly between two items */
	WIRE_ITEM_RECORD,      /* a block record (.rec); EOS ends a BLOCKS run or block payload */
	WIRE_ITEM_HELLO,       /* native: .hello */
	WIRE_ITEM_BLOCKS,      /* native: a BLOCKS message begins; RECORDs follow */
	WIRE_ITEM_COMPLETE,    /* native: .complete */
	WIRE_ITEM_ABORT,       /* native: .error */
	WIRE_ITEM_COMMIT,      /* native: .value = attempt */
	WIRE_ITEM_READY,       /* native: .value = version */
	WIRE_ITEM_ACK,	       /* native: .value = attempt */
	WIRE_ITEM_ERROR,       /* native: .error */
	WIRE_ITEM_SYNCED,      /* native: .value = passes */
	WIRE_ITEM_WACK,	       /* native: .value = WRITE sequence number */
	WIRE_ITEM_STATE,       /* native: .state */
	WIRE_ITEM_SUMS,	       /* native: .sums */
	WIRE_ITEM_VERDICT,     /* native: .verdict */
	WIRE_ITEM_DONE,	       /* native: .value = attempt */
	WIRE_ITEM_EXPORT,      /* native: .export */
	WIRE_ITEM_QEMU_HEADER, /* QEMU: .value = version (3) */
	WIRE_ITEM_CONFIG,      /* QEMU: .section.name = machine type */
	WIRE_ITEM_SECTION,     /* QEMU: .section, .section.name = the section's idstr */
	WIRE_ITEM_FOOTER,      /* QEMU: .section.section_id and idstr of the section ended */
	WIRE_ITEM_EOF,	       /* QEMU: the EOF byte */
	WIRE_ITEM_VMDESC,      /* QEMU: .value = bytes of JSON (skipped by the next call) */
	WIRE_ITEM_LANES,       /* native: .lanes */
};

struct wire_item {
	enum wire_item_kind kind;
	uint64_t offset; /* stream offset of the item's first byte */
	uint64_t value;	 /* READY, ACK, COMMIT, SYNCED, WACK, QEMU_HEADER, VMDESC */
	/* RECORD: rec.data points into the stream's buffer and stays valid
	 * until the next call.  A compressed chunk (ZSTD record, native only)
	 * is yielded as the DATA record it decompresses to, with packed = the
	 * bytes its frame took on the wire (0 for everything else). */
	struct wire_record rec;
	uint32_t packed;
	struct savevm_section section; /* CONFIG, SECTION, FOOTER */
	/* Owned by the stream, valid until the next call of the same kind: */
	const struct native_hello *hello;	/* HELLO */
	const struct native_complete *complete; /* COMPLETE */
	const struct native_error *error;	/* ABORT, ERROR */
	const struct native_state *state;	/* STATE */
	const struct native_sums *sums;		/* SUMS */
	const struct native_verdict *verdict;	/* VERDICT */
	const struct native_export *export;	/* EXPORT */
	const struct native_lanes *lanes;	/* LANES */
};

/* Sections a QEMU stream may start (section ids bound at once). */
#define WIRE_STREAM_MAX_SECTIONS 64

struct wire_stream;

/*
 * A reader over read(user, ...).  0 with *out (the caller owns it, freed
 * with wire_stream_free()), or -ENOMEM.  Nothing is read yet.
 */
int wire_stream_new(enum wire_stream_format format, wire_read_fn read, void *user,
		    struct wire_stream **out);
void wire_stream_free(struct wire_stream *s); /* accepts NULL */

/*
 * Native only: the framed message types the next top-level items may be
 * (a mask of NATIVE_ALLOW(type)); anything else is -EBADMSG ("unexpected
 * ... message").  Every known type until first called.
 */
void wire_stream_allow(struct wire_stream *s, uint64_t allowed);

/*
 * QEMU only, for tests and fuzzers: the payload size of a "block" DATA
 * record (QEMU's is always WIRE_QEMU_CHUNK_SIZE, the default).  -EINVAL
 * unless wire_chunk_size_valid(); call before the first item.
 */
int wire_stream_set_qemu_chunk(struct wire_stream *s, uint32_t chunk_size);

/*
 * The next item: 0 with *it filled, or a negative errno (see the top of
 * this file).  Blocks as long as the read callback does.
 */
int wire_stream_next(struct wire_stream *s, struct wire_item *it);

/* Bytes consumed so far (the offset of the next item). */
uint64_t wire_stream_offset(const struct wire_stream *s);
/* NATIVE or QEMU once known (AUTO before the first item of an AUTO stream). */
enum wire_stream_format wire_stream_format(const struct wire_stream *s);
/* The chunk size block records carry (0 before a native HELLO). */
uint32_t wire_stream_chunk_size(const struct wire_stream *s);

/* "RECORD", "HELLO", ... or "unknown". */
const char *wire_item_name(enum wire_item_kind k);

/*
 * A read callback over a buffer in memory (user = struct wire_membuf *):
 * the end of the buffer is -ECONNRESET, "truncated at offset N (M of L
 * bytes missing)".
 */
struct wire_membuf {
	const uint8_t *p;
	size_t len;
	size_t pos;
};
int wire_membuf_read(void *user, void *buf, size_t len, size_t *got);

#endif
