/* Shared definitions for obs-agent's BPF programs: the constants and the
 * records that cross to user space, and the per-goroutine state kept in
 * maps. This file is the one place these are defined: the Go side gets every
 * struct and enum below from bpf2go (-type in internal/uprobe/gen.go), never
 * by hand. Structs have explicit padding so their layout is the same on
 * every architecture. */
#ifndef OBS_H
#define OBS_H

#include "vmlinux.h"

/* Sizes fixed at compile time (they size arrays in the records). */
enum obs_limits {
	OBS_TEXT_MAX = 256,	  /* bytes of error or panic text per record */
	OBS_HIST_BUCKETS = 64,	  /* log2 duration buckets per function */
	OBS_INLINE_FRAMES = 16,	  /* open frames kept inline in a goroutine's state */
	OBS_G_READ_WORDS = 21,	  /* words of runtime.g read at once (stack .. goid) */
	OBS_MAX_UNWIND = 1 << 16, /* frames one probe may close or mark */
	OBS_SLOT_PROBES = 4,	  /* slots of the goroutine table tried per g */
};

/* Call outcomes; internal/record.Status has the same values (a test checks). */
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

/* Where a function's error result is at its RET sites (func_info.err_mode). */
enum obs_err_mode {
	OBS_ERR_NONE = 0,  /* no error result, or not known */
	OBS_ERR_REGS = 1,  /* in two integer result registers */
	OBS_ERR_STACK = 2, /* in a stack slot above SP */
};

/* The session's phase, set by user space in `phase` (see config.h). Attach
 * arms the RET sites in phase ARMING, then enters LIVE and arms the entry
 * sites; detach enters DRAINING first (entries open no frame from then on),
 * disarms the entries, lets open calls return, then disarms the RETs. So a
 * frame is only ever opened while every RET of its function is armed. */
enum obs_phase {
	OBS_PHASE_ARMING = 0,
	OBS_PHASE_LIVE = 1,
	OBS_PHASE_DRAINING = 2,
};

/* One finished call, in the ok lane. */
struct call_event {
	__u64 id;
	__u64 parent_id; /* 0: a root */
	__u64 goid;
	__u64 start_ns; /* CLOCK_MONOTONIC */
	__u64 end_ns;
	__u32 tgid;
	__u32 func_id;
	__u8 status; /* enum obs_status */
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

/* How a function is traced, written by user space per function. */
struct func_info {
	__u32 sample_thresh; /* keep an ok call when prandom < thresh */
	__u8 sample_all;     /* 1: keep every ok call */
	__u8 err_mode;	     /* enum obs_err_mode */
	__u8 itab_reg;	     /* integer result register index (ABI order) */
	__u8 data_reg;
	__s32 stack_off; /* OBS_ERR_STACK: from SP at RET to the itab word */
	__u32 _pad;
	__u64 entry; /* the entry's static address, for pie_file */
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
	__u64 unmatched_ret;	 /* RET of a call that began before the entries were armed */
	__u64 morestack_reentry; /* entry fired again after stack growth, ignored */
	__u64 read_fail;	 /* user memory that could not be read */
	__u64 abandoned;	 /* frames closed because a panic or Goexit unwound them */
	__u64 spawn_links;	 /* goroutines linked to a parent call at `go` */
	__u64 drain_ret;	 /* RET of a call that began after detach disarmed the entries */
	__u64 ok_pending;	 /* ok records since this CPU last woke the reader */
	__u64 err_pending;	 /* error-lane records since then */
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

/* What a slot of the goroutine table holds in place of a g. */
enum obs_gslot_mark {
	OBS_GSLOT_EMPTY = 0, /* never used: it ends a chain */
	OBS_GSLOT_FREED = 1, /* its goroutine exited; free, but a chain goes on */
};

/* A goroutine's state in the slot table (maps.h, gslots): the g it belongs
 * to (or an obs_gslot_mark), then the state. */
struct gslot {
	__u64 g;
	struct gstate st;
};

struct fkey {
	__u32 tgid;
	__u32 depth;
	__u64 g;
};

#endif
