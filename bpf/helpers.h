/* Small helpers every program uses: health counters, the target filter,
 * site cookies and ring wakeups. */
#ifndef OBS_HELPERS_H
#define OBS_HELPERS_H

#include "obs.h"
#include "config.h"
#include "maps.h"
#include "regs.h"

static __always_inline struct counters *health_get(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&health, &zero);
}

#define COUNT(field)                                                                               \
	do {                                                                                       \
		struct counters *__c = health_get();                                               \
		if (__c)                                                                           \
			__c->field++;                                                              \
	} while (0)

/* Returns the current process's tgid, or 0 when it is not the target (not
 * the traced process, or not in the traced cgroup). */
static __always_inline __u32 traced_tgid(void)
{
	if (!check_tgid && target_tgid)
		return target_tgid;
	/* The probes of a cgroup target are on files other cgroups' processes
	 * may run too: their hits end here, before any map is touched. */
	if (target_cgroup &&
	    bpf_get_current_ancestor_cgroup_id(target_cgroup_level) != target_cgroup)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (target_tgid && tgid != target_tgid)
		return 0;
	return tgid;
}

/* The function id of a site's cookie, or -1 when the hit is not to be
 * handled: its generation is not accepted, or the other generation's
 * program handled this trap.
 *
 * While two generations are accepted (config.h gens), a site of both runs
 * two programs on one trap, the newer generation's first: the kernel adds
 * a uprobe's new consumer at the head of its list and runs them in list
 * order. The newer program marks the trap (thread, address) and handles
 * it; the older one skips a trap so marked, and handles one that is not
 * (the newer program ran before its generation was accepted). So each
 * trap is handled exactly once, whatever instant the accepted generations
 * change at, and none is missed: the older generation stays accepted until
 * its links are gone. Outside a switch this costs one load and a compare. */
static __always_inline __s64 site_func(struct pt_regs *ctx)
{
	__u64 c = bpf_get_attach_cookie(ctx);
	__u32 g = c >> 32;
	__u64 now = *(volatile __u64 *)&gens;
	__u32 newest = (__u32)now, oldest = now >> 32;
	if (g == newest) {
		if (oldest != newest) {
			__u64 tid = bpf_get_current_pid_tgid();
			struct gen_mark m = {.ip = SITE_IP(ctx), .gen = g};
			bpf_map_update_elem(&gen_marks, &tid, &m, BPF_ANY);
		}
		return (__u32)c;
	}
	if (g != oldest)
		return -1;
	__u64 tid = bpf_get_current_pid_tgid();
	struct gen_mark *m = bpf_map_lookup_elem(&gen_marks, &tid);
	if (m && m->ip == SITE_IP(ctx) && m->gen == newest) {
		bpf_map_delete_elem(&gen_marks, &tid);
		return -1;
	}
	return (__u32)c;
}

/* The submit flag of a record: wake the reader once this CPU has written
 * every records since it last woke it. A per-CPU count costs no helper
 * call, where asking the ring how full it is would. */
static __always_inline __u64 wake_flag(__u64 *pending, __u32 every)
{
	if (++*pending < every)
		return BPF_RB_NO_WAKEUP;
	*pending = 0;
	return BPF_RB_FORCE_WAKEUP;
}

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0;
	if (v == 0)
		return 0;
	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1) {
		r += 1;
	}
	return r + 1; /* 2^(b-1) <= v < 2^b */
}

#endif
