/* The Go register ABI as seen from a uprobe: the current goroutine's g,
 * the stack pointer, and the integer argument/result registers in ABI
 * order (src/cmd/compile/abi-internal.md). */
#ifndef OBS_REGS_H
#define OBS_REGS_H

#include "vmlinux.h"

#if defined(__TARGET_ARCH_x86)
#define GO_G(ctx)  ((ctx)->r14)
#define GO_SP(ctx) ((ctx)->sp)
/* The probed address: the uprobe handler sets the instruction pointer
 * back to the breakpoint before the programs run. */
#define SITE_IP(ctx) ((ctx)->ip)
/* Copied out first: the verifier refuses a context access at a variable
 * offset. */
static __always_inline __u64 go_int_reg(struct pt_regs *ctx, __u32 i)
{
	__u64 r[9] = {ctx->ax, ctx->bx, ctx->cx,  ctx->di, ctx->si,
		      ctx->r8, ctx->r9, ctx->r10, ctx->r11};
	if (i < 9)
		return r[i];
	return 0;
}
#elif defined(__TARGET_ARCH_arm64)
#define GO_G(ctx)    ((ctx)->regs[28])
#define GO_SP(ctx)   ((ctx)->sp)
#define SITE_IP(ctx) ((ctx)->pc)
static __always_inline __u64 go_int_reg(struct pt_regs *ctx, __u32 i)
{
	__u64 r[16];
	__builtin_memcpy(r, ctx->regs, sizeof(r));
	if (i < 16)
		return r[i];
	return 0;
}
#endif

#endif
