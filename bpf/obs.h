/* Shared definitions for obs-agent's BPF programs: the records that cross the
 * ring buffers to user space, and the per-goroutine state kept in maps. The
 * Go side gets these layouts from bpf2go (-type), never by hand. Structs have
 * explicit padding so their layout is the same on every architecture. */
#ifndef OBS_H
#define OBS_H

#include "vmlinux.h"

/* Call outcomes; the values match internal/record.Status. */
enum obs_status {
	OBS_OK = 0,
	OBS_ERROR = 1,
	OBS_PANIC = 2,
	OBS_UNFINISHED = 3,
};

/* What an err_event carries. */
enum obs_err_kind {
	OBS_KIND_CALL = 0,	  /* a call that ended in error, panic or unfinished */
	OBS_KIND_PANIC_VALUE = 1, /* runtime.gopanic was entered: the panic value */
};

#define OBS_TEXT_MAX	 256
#define OBS_HIST_BUCKETS 64

/* One finished call, in the ok lane. */
struct call_event {
	__u64 id;
	__u64 parent_id; /* 0: a root */
	__u64 goid;
	__u64 start_ns; /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__u32 tgid;
	__u32 func_id;
	__u8 status;
	__u8 _pad[7];
};

/* A call with a non-ok outcome, or a panic value, in the error lane. */
struct err_event {
	struct call_event call;
	__u64 type_addr; /* itab of a returned error, or _type of a panic value */
	__u64 word0;	 /* first two words behind the data pointer */
	__u64 word1;
	__u64 data_addr;
	__u16 text_len; /* bytes of text read */
	__u8 truncated; /* the string was longer than OBS_TEXT_MAX */
	__u8 kind;	/* enum obs_err_kind */
	__u32 _pad;
	char text[OBS_TEXT_MAX];
};

/* How a function returns its error, written by user space per function. */
struct func_info {
	__u32 sample_thresh; /* keep an ok call when prandom < thresh */
	__u8 sample_all;     /* 1: keep every ok call */
	__u8 err_mode;	     /* 0: no error result, 1: in registers, 2: on the stack */
	__u8 itab_reg;	     /* integer result register index (ABI order) */
	__u8 data_reg;
	__s32 stack_off; /* err_mode 2: from SP at RET to the itab word */
	__u32 _pad;
};

/* Exact per-function aggregates, per CPU; user space sums them. */
struct func_stats {
	__u64 calls;
	__u64 errors;
	__u64 panics;
	__u64 unfinished;
	__u64 dropped; /* ring buffer full */
	__u64 sampled; /* ok calls not kept by sampling */
	__u64 total_ns;
	__u64 max_ns;
	__u64 hist[OBS_HIST_BUCKETS];
};

/* Health counters, per CPU. */
struct counters {
	__u64 ring_ok_full;
	__u64 ring_err_full;
	__u64 map_full;		 /* goroutine or frame map could not take an entry */
	__u64 unmatched_ret;	 /* RET without a recorded entry (e.g. attached mid-call) */
	__u64 morestack_reentry; /* entry fired again after stack growth, ignored */
	__u64 read_fail;	 /* user memory that could not be read */
	__u64 abandoned;	 /* frames closed because a panic or Goexit unwound them */
	__u64 spawn_links;	 /* goroutines linked to a parent call at `go` */
};

/* A goroutine is keyed by the address of its runtime.g, which is in a
 * register at every probe: no memory read is needed to find its state. A g
 * is reused only after its goroutine exits, and runtime.goexit1 (probed)
 * deletes the state first; newproc1's RET resets it too. */
struct gkey {
	__u32 tgid;
	__u32 _pad;
	__u64 g;
};

struct frame {
	__u64 id;
	__u64 parent_id;
	__u64 start_ns;
	__u64 sp_off; /* g.stack.hi - SP at entry: survives stack copies */
	__u32 func_id;
	__u32 keep; /* 1: a descendant failed; never sampled out */
};

/* The innermost open frames of a goroutine live in its state, so a call
 * costs one map lookup at entry and one at return; deeper frames (deep
 * recursion) go to the frames map. */
#define OBS_INLINE_FRAMES 16

struct gstate {
	__u64 goid;	    /* cached from g.goid */
	__u64 stack_lo;	    /* cached g.stack; refreshed when SP leaves it or */
	__u64 stack_hi;	    /* runtime.copystack moves the stack */
	__u64 spawn_parent; /* call active in the creating goroutine at `go` */
	__u64 last_ns;	    /* last probe hit on this goroutine */
	__u64 panic_seq;    /* bumped at each gopanic; 0: not panicking */
	__u32 depth;	    /* open traced frames */
	__u32 stale;	    /* 1: read the cached stack bounds again */
	struct frame frames[OBS_INLINE_FRAMES];
};

struct fkey {
	__u32 tgid;
	__u32 depth;
	__u64 g;
};

#endif
