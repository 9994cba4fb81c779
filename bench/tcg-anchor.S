/*
 * tcg-anchor.S - the store loop bench/guest-speed times under QEMU's own
 * TCG (qemu-system-x86_64 -accel tcg), the anchor for umig's Unicorn vCPU.
 *
 * A multiboot (ELF32) kernel, so QEMU's -kernel boots it with no firmware
 * of ours: it enters long mode with the paging umig gives its guests
 * (identity map of the first 4 GiB in 1 GiB pages), then writes one
 * 4-byte word into each 4 KiB page of 256 MiB from 16 MiB up, pass after
 * pass, and writes one byte to the debug console (port 0xe9) after each
 * pass of 65536 pages.  The host timestamps those bytes.
 */
#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0x00000003
#define BASE     0x01000000
#define PAGES    65536

	.code32
	.text
	.align 4
	.long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)
	.globl _start
_start:
	cli
	movl $stack_top, %esp
	/* PML4[0] -> PDPT; PDPT[0..3] = 1 GiB pages, present, writable */
	movl $pdpt, %eax
	orl $0x3, %eax
	movl %eax, pml4
	movl $0, %ecx
1:	movl %ecx, %eax
	shll $30, %eax
	orl $0xe3, %eax			/* P RW A D PS */
	movl %eax, pdpt(,%ecx,8)
	incl %ecx
	cmpl $4, %ecx
	jne 1b
	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx		/* EFER.LME */
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG PE */
	movl %eax, %cr0
	lgdt gdt_ptr
	ljmp $0x08, $long_mode

	.code64
long_mode:
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %edx, %edx			/* the value stored: a running count */
pass:
	movq $BASE, %rdi
	movl $PAGES, %ecx
2:	incl %edx
	movl %edx, (%rdi)
	addq $4096, %rdi
	decl %ecx
	jnz 2b
	movb $'.', %al
	outb %al, $0xe9
	jmp pass

	.section .rodata
	.align 8
gdt:
	.quad 0
	.quad 0x00af9a000000ffff		/* 0x08: 64-bit code */
	.quad 0x00cf92000000ffff		/* 0x10: data */
gdt_ptr:
	.word gdt_ptr - gdt - 1
	.long gdt

	.bss
	.align 4096
pml4:	.skip 4096
pdpt:	.skip 4096
	.skip 16384
stack_top:
	.section .note.GNU-stack, "", @progbits
