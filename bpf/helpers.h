/* Small helpers every program uses: health counters, the target filter,
 * site cookies and ring wakeups. */
#ifndef OBS_HELPERS_H
#define OBS_HELPERS_H

#include "obs.h"
#include "config.h"
#include "maps.h"

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

/* The function id of a site's cookie, or -1 when the site belongs to
 * another generation. */
static __always_inline __s64 site_func(void *ctx)
{
	__u64 c = bpf_get_attach_cookie(ctx);
	if ((__u32)(c >> 32) != active_gen)
		return -1;
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
