/* The value of a returned error, captured at RET for user space to render
 * as its Error() text (or as Go syntax) without running code in the target.
 *
 * User space compiles, per dynamic type, a small read plan from the
 * binary's type descriptors (struct errtext_node, in the errtext_nodes map
 * keyed by the type descriptor's run-time address): how many bytes of a
 * value to copy, and which of its fields are strings, pointers, interfaces
 * or slices to follow. At a RET whose error is non-nil (the rare path; ok
 * returns never get here), errtext_output runs the plans from the error's
 * (itab, data) words with a bounded work queue, copying what it reads into
 * a snapshot of (address, bytes) segments, and sends the call with its
 * snapshot as one variable-length record in the error ring. Nested
 * interfaces are resolved by their itab at run time, so a wrapped chain is
 * followed whatever its dynamic types. Every read is bounded: at most
 * ERRTEXT_ITEMS work items, ERRTEXT_CHUNK bytes per read, ERRTEXT_SNAP
 * bytes in all. User space (internal/errtext) turns the segments back into
 * memory and renders the value with the type layout. A panic value goes
 * the same way (errtext_output_panic, hooked in obs_gopanic).
 *
 * Its hooks are the error branch of ret_error (calls.h), the one place in
 * the RET path where a returned error's itab and data words are known, and
 * obs_gopanic (runtime.h); ok returns never reach either. Both fall back to
 * the plain err_event when the ring cannot take the larger record. The
 * size of errtext_nodes is set by user space (internal/uprobe Sizes). */
#ifndef ERRTEXT_H
#define ERRTEXT_H

#include "records.h"

/* Bounds, shared with user space through bpf2go. SNAP, CHUNK and ITEMS
 * must be powers of two (they are masks too). */
enum errtext_limit {
	ERRTEXT_SNAP = 1024,   /* snapshot bytes per error */
	ERRTEXT_CHUNK = 256,   /* bytes per read */
	ERRTEXT_ITEMS = 16,    /* work items (reads) per error */
	ERRTEXT_FIELDS = 6,    /* followed fields per type */
	ERRTEXT_SLICE = 4,     /* interfaces followed per []error */
	ERRTEXT_MAX_DEPTH = 6, /* levels of pointers and interfaces */
};

/* What a field (or a work item) holds. */
enum errtext_kind {
	ERRTEXT_STR = 1,    /* Go string header: follow the bytes */
	ERRTEXT_PTR = 2,    /* pointer to a value of type elem */
	ERRTEXT_IFACE = 3,  /* non-empty interface: (itab, data) */
	ERRTEXT_EFACE = 4,  /* empty interface: (type, data) */
	ERRTEXT_BYTES = 5,  /* slice of elem-sized scalars: copy the array */
	ERRTEXT_IFACES = 6, /* slice of non-empty interfaces */
	/* Work items only. */
	ERRTEXT_RAW = 7,   /* copy len bytes */
	ERRTEXT_TYPED = 8, /* a value of type typ at addr: run its plan */
	ERRTEXT_DYN = 9,   /* an interface's dynamic type typ and data word */
};

/* errtext_node.flags */
enum errtext_flag {
	ERRTEXT_DIRECT = 1, /* pointer type: an interface's data word is the pointer */
};

struct errtext_field {
	__u16 off;
	__u8 kind; /* enum errtext_kind */
	__u8 _pad[5];
	__u64 elem; /* ERRTEXT_PTR: the pointee's type; ERRTEXT_BYTES: element size */
};

/* The read plan of one type, keyed by its descriptor's run-time address. */
struct errtext_node {
	__u16 size; /* bytes of the value to copy (at most ERRTEXT_CHUNK) */
	__u8 flags;
	__u8 nfields;
	__u32 _pad;
	__u64 elem; /* ERRTEXT_DIRECT pointer types: the pointee's type */
	struct errtext_field fields[ERRTEXT_FIELDS];
};

/* One snapshot segment's header; len bytes follow, padded to 8. */
struct errtext_seg {
	__u64 addr;
	__u32 len;
	__u32 _pad;
};

/* An error-lane call with the snapshot of its error's value. User space
 * tells it from a plain err_event by its length. */
struct errtext_event {
	struct err_event ev;
	__u32 snap_len;
	__u32 _pad;
	__u8 snap[ERRTEXT_SNAP];
};

struct errtext_item {
	__u64 a; /* address, or type for ERRTEXT_DYN */
	__u64 b; /* ERRTEXT_TYPED, ERRTEXT_DYN: type / data; ERRTEXT_RAW: length */
	__u32 kind;
	__u32 depth;
};

/* Per-CPU scratch: the record being built (with room for a read that
 * starts just below ERRTEXT_SNAP, so the verifier can bound every write by
 * a mask) and the work queue. */
struct errtext_scratch {
	struct errtext_event e;
	__u8 slack[ERRTEXT_CHUNK + sizeof(struct errtext_seg)];
	struct errtext_item q[ERRTEXT_ITEMS];
	__u32 head;
	__u32 tail;
	__u32 pos; /* bytes of snapshot used */
	__u32 _pad;
	__u64 bias; /* the process's load bias when pie_file, else 0 */
};

const struct errtext_event *_errtext_event __attribute__((unused));
const struct errtext_node *_errtext_node __attribute__((unused));
const struct errtext_seg *_errtext_seg __attribute__((unused));
const enum errtext_kind *_errtext_kind __attribute__((unused));
const enum errtext_limit *_errtext_limit __attribute__((unused));
const enum errtext_flag *_errtext_flag __attribute__((unused));

/* Type descriptor (run-time address) -> read plan. Filled by user space
 * before the probes are attached and only read here; preallocated, so a
 * lookup never allocates. Sized by user space (internal/uprobe Sizes),
 * as every map is. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 12);
	__type(key, __u64);
	__type(value, struct errtext_node);
} errtext_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct errtext_scratch);
} errtext_scratch SEC(".maps");

static __always_inline void errtext_push(struct errtext_scratch *s, __u32 kind, __u64 a, __u64 b,
					 __u32 depth)
{
	if (!a || depth > ERRTEXT_MAX_DEPTH || s->tail >= ERRTEXT_ITEMS)
		return;
	struct errtext_item *it = &s->q[s->tail & (ERRTEXT_ITEMS - 1)];
	it->a = a;
	it->b = b;
	it->kind = kind;
	it->depth = depth;
	s->tail++;
}

/* Copies n bytes at addr into the snapshot as one segment; returns the
 * offset of its bytes in snap, or -1 when it does not fit or cannot be
 * read. */
static __always_inline int errtext_copy(struct errtext_scratch *s, __u64 addr, __u64 n)
{
	__u32 pos = s->pos;
	if (n > ERRTEXT_CHUNK)
		n = ERRTEXT_CHUNK;
	if (!addr || !n || pos + sizeof(struct errtext_seg) + 8 > ERRTEXT_SNAP)
		return -1;
	if (pos + sizeof(struct errtext_seg) + n > ERRTEXT_SNAP)
		n = ERRTEXT_SNAP - pos - sizeof(struct errtext_seg);
	pos &= ERRTEXT_SNAP - 1;
	struct errtext_seg *h = (void *)&s->e.snap[pos];
	__u32 data = pos + sizeof(*h);
	if (bpf_probe_read_user(&s->e.snap[data & (ERRTEXT_SNAP - 1)], n & (2 * ERRTEXT_CHUNK - 1),
				(void *)addr))
		return -1;
	h = (void *)&s->e.snap[pos & (ERRTEXT_SNAP - 1)];
	h->addr = addr;
	h->len = n;
	h->_pad = 0;
	s->pos = pos + sizeof(*h) + ((n + 7) & ~7ULL);
	return data;
}

/* A word of the snapshot at byte off (of snap). */
static __always_inline __u64 errtext_word(struct errtext_scratch *s, __u32 off)
{
	__u64 w = 0;
	__builtin_memcpy(&w, &s->e.snap[off & (ERRTEXT_SNAP - 1)], sizeof(w));
	return w;
}

static long errtext_step(__u64 i, void *ctx)
{
	__u32 zero = 0;
	struct errtext_scratch *s = bpf_map_lookup_elem(&errtext_scratch, &zero);
	if (!s || s->head >= s->tail || s->head >= ERRTEXT_ITEMS)
		return 1;
	struct errtext_item it = s->q[s->head & (ERRTEXT_ITEMS - 1)];
	s->head++;
	__u32 d = it.depth + 1;
	int at;

	switch (it.kind) {
	case ERRTEXT_RAW:
		errtext_copy(s, it.a, it.b);
		return 0;
	case ERRTEXT_IFACE: /* a = itab, b = data: the itab's type word */
		at = errtext_copy(s, it.a, 16);
		if (at >= 0)
			errtext_push(s, ERRTEXT_DYN, errtext_word(s, at + 8), it.b, it.depth);
		return 0;
	case ERRTEXT_IFACES: /* a = array, b = count */
		at = errtext_copy(s, it.a, it.b * 16);
		if (at < 0)
			return 0;
		for (__u32 k = 0; k < ERRTEXT_SLICE; k++) {
			if (k >= it.b)
				break;
			errtext_push(s, ERRTEXT_IFACE, errtext_word(s, at + 16 * k),
				     errtext_word(s, at + 16 * k + 8), d);
		}
		return 0;
	case ERRTEXT_DYN: { /* a = type (run-time), b = data word */
		/* Plans are keyed, and point at each other, by the addresses
		 * user space gave them: with pie_file the static ones, so the
		 * type read from memory loses the process's bias here, once. */
		__u64 type = it.a - s->bias;
		struct errtext_node *n = bpf_map_lookup_elem(&errtext_nodes, &type);
		if (!n) {
			/* No plan: the value's first words (a scalar's bytes,
			 * or a string header) are still worth having. */
			errtext_copy(s, it.b, 16);
			return 0;
		}
		if (n->flags & ERRTEXT_DIRECT)
			errtext_push(s, ERRTEXT_TYPED, n->elem, it.b, it.depth);
		else
			errtext_push(s, ERRTEXT_TYPED, type, it.b, it.depth);
		return 0;
	}
	case ERRTEXT_TYPED: { /* a = type, b = address */
		struct errtext_node *n = bpf_map_lookup_elem(&errtext_nodes, &it.a);
		if (!n)
			return 0;
		at = errtext_copy(s, it.b, n->size);
		if (at < 0)
			return 0;
		for (__u32 k = 0; k < ERRTEXT_FIELDS; k++) {
			if (k >= n->nfields)
				break;
			struct errtext_field *f = &n->fields[k];
			if (f->off + 8 > n->size)
				continue;
			__u64 w0 = errtext_word(s, at + f->off);
			__u64 w1 = errtext_word(s, at + f->off + 8);
			switch (f->kind) {
			case ERRTEXT_STR:
				errtext_push(s, ERRTEXT_RAW, w0, w1, d);
				break;
			case ERRTEXT_PTR:
				if (w0) /* a nil pointer takes no item */
					errtext_push(s, ERRTEXT_TYPED, f->elem, w0, d);
				break;
			case ERRTEXT_IFACE:
				errtext_push(s, ERRTEXT_IFACE, w0, w1, d);
				break;
			case ERRTEXT_EFACE:
				errtext_push(s, ERRTEXT_DYN, w0, w1, d);
				break;
			case ERRTEXT_BYTES:
				if (w1 < ERRTEXT_CHUNK)
					errtext_push(s, ERRTEXT_RAW, w0, w1 * f->elem, d);
				else
					errtext_push(s, ERRTEXT_RAW, w0, ERRTEXT_CHUNK, d);
				break;
			case ERRTEXT_IFACES:
				errtext_push(s, ERRTEXT_IFACES, w0,
					     w1 < ERRTEXT_SLICE ? w1 : ERRTEXT_SLICE, d);
				break;
			}
		}
		return 0;
	}
	}
	return 0;
}

/* Sends an error-lane record with the snapshot of a value: the header
 * (call, kind, type and data words) from the arguments, then the snapshot
 * taken by running the plans from the root item (root_kind, a, b). Returns
 * 0 when sent; otherwise the caller sends the plain record, which needs
 * less ring space. */
static __always_inline int errtext_send(struct call_event *call, __u8 kind, __u32 root_kind,
					__u64 a, __u64 b, int with_words)
{
	__u32 zero = 0;
	struct errtext_scratch *s = bpf_map_lookup_elem(&errtext_scratch, &zero);
	if (!s)
		return -1;
	__builtin_memset(&s->e.ev, 0, sizeof(s->e.ev));
	s->e.ev.call = *call;
	s->e.ev.kind = kind;
	s->e.ev.type_addr = a;
	s->e.ev.data_addr = b;
	s->e._pad = 0;
	if (with_words)
		read_iface(&s->e.ev, a, b);
	s->head = 0;
	s->tail = 0;
	s->pos = 0;
	s->bias = 0;
	if (pie_file) {
		__u32 tgid = call->tgid;
		__u64 *bias = bpf_map_lookup_elem(&pie_bias, &tgid);
		if (!bias)
			return -1; /* no plan can be found: the plain record */
		s->bias = *bias;
	}
	errtext_push(s, root_kind, a, b, 0);
	bpf_loop(ERRTEXT_ITEMS, errtext_step, 0, 0);
	__u32 n = s->pos;
	if (n > ERRTEXT_SNAP)
		n = ERRTEXT_SNAP;
	s->e.snap_len = n;
	return bpf_ringbuf_output(&ring_err, &s->e, offsetof(struct errtext_event, snap) + n,
				  err_wake());
}

/* A call (already filled in *call) that returned the error (itab, data). */
static __always_inline int errtext_output(struct call_event *call, __u64 itab, __u64 data)
{
	return errtext_send(call, OBS_KIND_CALL, ERRTEXT_IFACE, itab, data, 0);
}

/* A panic value (type, data), an empty interface. The header also gets
 * what read_iface reads (the words and string behind the data pointer),
 * from which user space formats strings and numbers. */
static __always_inline int errtext_output_panic(struct call_event *call, __u64 type, __u64 data)
{
	return errtext_send(call, OBS_KIND_PANIC_VALUE, ERRTEXT_DYN, type, data, 1);
}

#endif
