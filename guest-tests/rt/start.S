/*
 * start.S - entry point of every umig test guest.
 *
 * umig enters here on every vCPU, in 64-bit mode with paging, RSP = that
 * vCPU's stack top, RDI = address of struct umig_boot_params and RSI =
 * the vCPU number (see guest-abi.h).  All the real work - checking the
 * boot params, running main() or a secondary's work, reporting the exit
 * code - is in rt_start() in rt.c, so this stays a few lines.
 */
	.section .text.start, "ax", @progbits
	.globl	_start
	.type	_start, @function
_start:
	xorl	%ebp, %ebp		/* end of the frame chain for debuggers */
	andq	$-16, %rsp		/* SysV: 16-byte aligned at the call */
	call	rt_start		/* RDI = boot params, RSI = vCPU: passed through */
	/*
	 * rt_start() never returns; if the exit port were ever ignored, spin
	 * rather than run off into whatever follows.  No hlt: there are no
	 * interrupts to wake us, and the host may not expect the exit.
	 */
1:	pause
	jmp	1b
	.size	_start, . - _start

	.section .note.GNU-stack, "", @progbits
