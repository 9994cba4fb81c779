/*
 * test-loader.c - the ELF loader accepts exactly the static x86-64
 * executables umig can run, and nothing else touches guest RAM.
 *
 * Images are built in memory with <elf.h>'s structs: one valid minimal
 * ET_EXEC, then one field broken per test.  Guest RAM is pre-filled with
 * 0xAA so that "bss zeroed" and "RAM untouched by a rejected image" are
 * both visible.  Every rejection must give its errno AND a detail that
 * names the problem, since that detail is what a person sees.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "t-util.h"
#include "umig/guest-abi.h"
#include "umig/loader.h"
#include "umig/mem.h"
#include "umig/util.h"

#define T_RAM        (4ull << 20)
#define T_FILL       0xAA
#define T_BASE       UMIG_IMAGE_MIN_GPA	/* 0x100000 */
#define T_PAYLOAD    0x100		/* file offset of the segment data */
#define T_FILESZ     16
#define T_MEMSZ      0x1800		/* bss: memsz > filesz, not page aligned */
#define T_ENTRY      (T_BASE + 4)

/* An ELF image being built; the union keeps the headers aligned. */
struct t_elf {
	size_t len;
	union {
		uint8_t b[0x400];
		Elf64_Ehdr eh;
	} u;
};

static Elf64_Phdr *t_ph(struct t_elf *e, unsigned i)
{
	return (Elf64_Phdr *)(e->u.b + sizeof(Elf64_Ehdr)) + i;
}

/*
 * The valid minimal image: one PT_LOAD R+X at 0x100000 holding 16 bytes
 * (0x10..0x1f) and 0x17f0 bytes of bss; room for a second program header.
 */
static void t_elf_valid(struct t_elf *e)
{
	Elf64_Ehdr *eh = &e->u.eh;
	Elf64_Phdr *ph = t_ph(e, 0);

	memset(e, 0, sizeof(*e));
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = T_ENTRY;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 1;
	ph->p_type = PT_LOAD;
	ph->p_flags = PF_R | PF_X;
	ph->p_offset = T_PAYLOAD;
	ph->p_vaddr = ph->p_paddr = T_BASE;
	ph->p_filesz = T_FILESZ;
	ph->p_memsz = T_MEMSZ;
	ph->p_align = PAGE_SIZE;
	for (unsigned i = 0; i < T_FILESZ; i++)
		e->u.b[T_PAYLOAD + i] = 0x10 + i;
	e->len = T_PAYLOAD + T_FILESZ;
}

static int t_setup(void **state)
{
	struct guest_mem *m = calloc(1, sizeof(*m));

	if (!m || mem_alloc(m, T_RAM) < 0)
		return -1;
	memset(m->host, T_FILL, m->size);
	*state = m;
	return 0;
}

static int t_teardown(void **state)
{
	struct guest_mem *m = *state;

	mem_free(m);
	free(m);
	return 0;
}

/* Every byte of guest RAM still holds the fill. */
static void t_assert_ram_untouched(const struct guest_mem *m)
{
	const uint64_t *w = (const uint64_t *)m->host;

	for (uint64_t i = 0; i < m->size / 8; i++)
		if (w[i] != 0xAAAAAAAAAAAAAAAAull)
			fail_msg("guest RAM changed at 0x%llx", (unsigned long long)(i * 8));
}

static void t_assert_msg_has(int code, const char *keyword)
{
	const char *msg = err_msg(code);

	if (!strstr(msg, keyword))
		fail_msg("error detail \"%s\" does not mention \"%s\"", msg, keyword);
}

/* e must be refused with code, a detail naming keyword, and RAM intact. */
static void t_rejects(void **state, struct t_elf *e, int code, const char *keyword)
{
	struct guest_mem *m = *state;
	struct elf_image img;

	memset(&img, 0x5a, sizeof(img));
	err_clear();
	assert_int_equal(loader_load_elf(m, e->u.b, e->len, &img), code);
	t_assert_msg_has(code, keyword);
	t_assert_ram_untouched(m);
	/* out is reset, never half-filled */
	assert_true(img.entry == 0 && img.image_end == 0 && img.nsegs == 0);
}

/* --- the valid image ------------------------------------------------------ */

static void test_valid_image_loads(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	struct t_elf e;

	t_elf_valid(&e);
	assert_int_equal(loader_load_elf(m, e.u.b, e.len, &img), 0);
	assert_true(img.entry == T_ENTRY);
	assert_int_equal(img.nsegs, 1);
	/* end of bss rounded up to a page */
	assert_true(img.image_end == T_BASE + 0x2000);
	assert_int_equal(img.image_end % PAGE_SIZE, 0);
	/* file bytes copied */
	assert_memory_equal(m->host + T_BASE, e.u.b + T_PAYLOAD, T_FILESZ);
	/* bss zeroed, and not one byte further */
	for (uint64_t a = T_BASE + T_FILESZ; a < T_BASE + T_MEMSZ; a++)
		if (m->host[a] != 0)
			fail_msg("bss byte at 0x%llx is 0x%02x", (unsigned long long)a,
				 m->host[a]);
	assert_int_equal(m->host[T_BASE + T_MEMSZ], T_FILL);
	assert_int_equal(m->host[T_BASE - 1], T_FILL);
	/* loading writes no boot parameters */
	assert_int_equal(m->host[UMIG_BOOT_PARAMS_GPA], T_FILL);
}

static void test_segment_ending_at_ram_end_loads(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_paddr = T_RAM - T_MEMSZ;
	e.u.eh.e_entry = T_RAM - T_MEMSZ;
	assert_int_equal(loader_load_elf(m, e.u.b, e.len, &img), 0);
	assert_true(img.image_end == T_RAM);
	assert_memory_equal(m->host + T_RAM - T_MEMSZ, e.u.b + T_PAYLOAD, T_FILESZ);
	assert_int_equal(m->host[T_RAM - 1], 0);
}

/* Two PT_LOADs and a PT_NOTE: both loads copied, the note ignored. */
static void test_two_segments_and_a_note(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	struct t_elf e;
	Elf64_Phdr *data, *note;

	t_elf_valid(&e);
	e.u.eh.e_phnum = 3;
	data = t_ph(&e, 1);
	*data = *t_ph(&e, 0);
	data->p_flags = PF_R | PF_W;
	data->p_paddr = data->p_vaddr = T_BASE + 0x5000;
	data->p_memsz = 0x100;
	note = t_ph(&e, 2);
	note->p_type = PT_NOTE;
	note->p_offset = T_PAYLOAD;
	note->p_filesz = 4;
	note->p_paddr = 0x10;	/* would be refused if it were a PT_LOAD */
	assert_int_equal(loader_load_elf(m, e.u.b, e.len, &img), 0);
	assert_int_equal(img.nsegs, 2);
	assert_true(img.image_end == T_BASE + 0x6000);
	assert_memory_equal(m->host + T_BASE + 0x5000, e.u.b + T_PAYLOAD, T_FILESZ);
	assert_int_equal(m->host[T_BASE + 0x5000 + T_FILESZ], 0);
	assert_int_equal(m->host[0x10], T_FILL);
}

static void test_boot_params_written(void **state)
{
	static const char cmd[] = "wss=4 passes=0";
	struct guest_mem *m = *state;
	const struct umig_boot_params *bp =
		(const void *)(m->host + UMIG_BOOT_PARAMS_GPA);
	struct elf_image img;
	struct t_elf e;

	t_elf_valid(&e);
	assert_int_equal(loader_load_elf(m, e.u.b, e.len, &img), 0);
	assert_int_equal(loader_write_boot_params(m, &img, cmd, 1), 0);
	assert_true(bp->magic == UMIG_BOOT_MAGIC);
	assert_int_equal(bp->version, UMIG_BOOT_VERSION);
	assert_true(bp->mem_size == T_RAM);
	assert_true(bp->free_start == img.image_end);
	assert_true(bp->free_end == T_RAM);
	assert_int_equal(bp->cmdline_len, strlen(cmd));
	assert_string_equal(bp->cmdline, cmd);
	assert_int_equal(bp->ncpus, 1);
	assert_int_equal(bp->cpu_model, UMIG_CPU_MODEL_ID);
	assert_int_equal(loader_write_boot_params(m, &img, cmd, 0), -EINVAL);
	assert_int_equal(loader_write_boot_params(m, &img, cmd, UMIG_MAX_CPUS + 1), -EINVAL);
	assert_int_equal(loader_write_boot_params(m, &img, cmd, 1), 0);
	/* the rest of the cmdline field is zero, not the old RAM contents */
	for (size_t i = strlen(cmd); i < UMIG_CMDLINE_MAX; i++)
		assert_int_equal(bp->cmdline[i], 0);
	/* nothing written past the struct */
	assert_int_equal(m->host[UMIG_BOOT_PARAMS_GPA + sizeof(*bp)], T_FILL);

	assert_int_equal(loader_write_boot_params(m, &img, NULL, 1), 0);
	assert_int_equal(bp->cmdline_len, 0);
	assert_string_equal(bp->cmdline, "");
}

static void test_boot_params_cmdline_limit(void **state)
{
	struct guest_mem *m = *state;
	const struct umig_boot_params *bp =
		(const void *)(m->host + UMIG_BOOT_PARAMS_GPA);
	struct elf_image img = { .entry = T_ENTRY, .image_end = T_BASE + 0x2000, .nsegs = 1 };
	char *cmd = malloc(UMIG_CMDLINE_MAX + 1);

	assert_non_null(cmd);
	memset(cmd, 'k', UMIG_CMDLINE_MAX);
	cmd[UMIG_CMDLINE_MAX] = 0;	/* 2048 bytes: no room for the NUL */
	err_clear();
	assert_int_equal(loader_write_boot_params(m, &img, cmd, 1), -E2BIG);
	t_assert_msg_has(-E2BIG, "2048 bytes");
	t_assert_ram_untouched(m);
	cmd[UMIG_CMDLINE_MAX - 1] = 0;	/* 2047 fit */
	assert_int_equal(loader_write_boot_params(m, &img, cmd, 1), 0);
	assert_int_equal(bp->cmdline_len, UMIG_CMDLINE_MAX - 1);
	assert_int_equal(bp->cmdline[UMIG_CMDLINE_MAX - 1], 0);
	free(cmd);

	img.image_end = T_RAM + PAGE_SIZE;
	assert_int_equal(loader_write_boot_params(m, &img, "x", 1), -E2BIG);
	t_assert_msg_has(-E2BIG, "does not fit");
}

static void test_entry_state(void **state)
{
	struct elf_image img = { .entry = 0x123456, .image_end = 0x200000, .nsegs = 1 };
	struct cpu_state s;

	(void)state;
	memset(&s, 0x11, sizeof(s));
	loader_entry_state(&img, 0, &s);
	assert_true(s.rip == 0x123456);
	assert_true(s.gpr[GPR_RSP] == UMIG_STACK_TOP);
	assert_true(s.gpr[GPR_RDI] == UMIG_BOOT_PARAMS_GPA);
	assert_true(s.gpr[GPR_RSI] == 0);
	assert_true(s.rflags == 0x2);
	/* the long-mode environment hardware accepts */
	assert_true(s.cr0 == 0x80000033ull);	/* PG NE ET MP PE */
	assert_true(s.cr3 == UMIG_PML4_GPA);
	assert_true(s.cr4 == 0x620);		/* OSXMMEXCPT OSFXSR PAE */
	assert_true(s.efer == 0x500);		/* LMA LME */
	assert_int_equal(s.seg[SEG_CS], UMIG_SEL_CODE64);
	for (int i = 0; i < SEG_COUNT; i++)
		if (i != SEG_CS)
			assert_int_equal(s.seg[i], UMIG_SEL_DATA);
	assert_true(s.gdtr.base == UMIG_GDT_GPA && s.gdtr.limit == UMIG_GDT_LIMIT);
	assert_int_equal(s.fcw, 0x37f);
	assert_int_equal(s.mxcsr, 0x1f80);
	/* everything else is zero, not left over */
	assert_true(s.gpr[GPR_RAX] == 0);
	assert_true(s.cr2 == 0 && s.fs_base == 0 && s.idtr.base == 0);

	/* vCPU 3: its own stack and its number in RSI */
	loader_entry_state(&img, 3, &s);
	assert_true(s.gpr[GPR_RSP] == UMIG_STACK_TOP - 3 * UMIG_CPU_STACK);
	assert_true(s.gpr[GPR_RSI] == 3);
}

static void test_machine_tables(void **state)
{
	struct guest_mem *m = *state;
	const uint64_t *gdt = (const void *)(m->host + UMIG_GDT_GPA);
	const uint64_t *pml4 = (const void *)(m->host + UMIG_PML4_GPA);
	const uint64_t *pdpt = (const void *)(m->host + UMIG_PDPT_GPA);

	memset(m->host + UMIG_GDT_GPA, 0xee, 0x6000);
	assert_int_equal(loader_setup_machine(m), 0);
	assert_true(gdt[0] == 0);
	assert_true(gdt[1] == 0x00af9b000000ffffull);	/* code: P DPL0 S type 0xb, L, G */
	assert_true(gdt[2] == 0x00cf93000000ffffull);	/* data: P DPL0 S type 0x3, D/B, G */
	/* TSS: base 0x1800, limit 0x67, type 0xb (busy 64-bit TSS), present */
	assert_true(gdt[3] == (0x67ull | 0x1800ull << 16 | 0x8bull << 40));
	assert_true(gdt[4] == 0);
	assert_true(pml4[0] == (UMIG_PDPT_GPA | 0x23));
	assert_true(pml4[1] == ((UMIG_PDPT_GPA + 4096) | 0x23));
	assert_true(pml4[2] == 0);
	/* T_RAM is under 1 GiB: one 1 GiB page at 0, P RW A D PS */
	assert_true(pdpt[0] == 0xe3);
	assert_true(pdpt[1] == 0);
	/* the tables end before the boot page */
	assert_true(UMIG_PDPT_GPA + UMIG_PDPT_COUNT * 4096 <= UMIG_BOOT_PARAMS_GPA);
	assert_true(UMIG_TSS_GPA + UMIG_TSS_LIMIT < UMIG_PML4_GPA);
}

/* --- malformed images: one field broken per test -------------------------- */

static void test_rejects_bad_magic(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_ident[EI_MAG1] = 'X';
	t_rejects(state, &e, -ENOEXEC, "bad magic");
}

static void test_rejects_32bit_class(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_ident[EI_CLASS] = ELFCLASS32;
	t_rejects(state, &e, -ENOEXEC, "64-bit");
}

static void test_rejects_big_endian(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_ident[EI_DATA] = ELFDATA2MSB;
	t_rejects(state, &e, -ENOEXEC, "little-endian");
}

static void test_rejects_wrong_machine(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_machine = EM_AARCH64;
	t_rejects(state, &e, -ENOEXEC, "machine 183");
}

static void test_rejects_et_dyn(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_type = ET_DYN;
	t_rejects(state, &e, -ENOEXEC, "ET_EXEC");
}

static void test_rejects_wrong_phentsize(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phentsize = sizeof(Elf32_Phdr);
	t_rejects(state, &e, -ENOEXEC, "program header size");
}

static void test_rejects_phnum_zero(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phnum = 0;
	t_rejects(state, &e, -ENOEXEC, "0 program headers");
}

static void test_rejects_phnum_huge(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phnum = 0xffff;	/* PN_XNUM: not supported, not looped over */
	t_rejects(state, &e, -ENOEXEC, "program headers");
}

static void test_rejects_phoff_beyond_file(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phoff = e.len + 8;
	t_rejects(state, &e, -ENOEXEC, "outside the file");
	/* starts inside, ends outside */
	e.u.eh.e_phoff = e.len - 8;
	t_rejects(state, &e, -ENOEXEC, "outside the file");
	/* an offset that would wrap a naive "phoff + size" check */
	e.u.eh.e_phoff = UINT64_MAX - 8;
	t_rejects(state, &e, -ENOEXEC, "outside the file");
}

static void test_rejects_segment_offset_beyond_file(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_offset = e.len + 1;
	t_rejects(state, &e, -ENOEXEC, "outside the file");
	t_ph(&e, 0)->p_offset = UINT64_MAX;
	t_rejects(state, &e, -ENOEXEC, "outside the file");
}

static void test_rejects_segment_filesz_beyond_file(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_filesz = T_FILESZ + 1;	/* one byte past the end */
	t_rejects(state, &e, -ENOEXEC, "outside the file");
	t_ph(&e, 0)->p_filesz = UINT64_MAX - 0x80;
	t_ph(&e, 0)->p_memsz = UINT64_MAX;
	t_rejects(state, &e, -ENOEXEC, "outside the file");
}

static void test_rejects_filesz_over_memsz(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_memsz = T_FILESZ - 1;
	t_rejects(state, &e, -ENOEXEC, "exceeds memory size");
}

static void test_rejects_segment_below_1mib(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_paddr = T_BASE - PAGE_SIZE;
	e.u.eh.e_entry = T_BASE - PAGE_SIZE;
	t_rejects(state, &e, -ENOEXEC, "below 0x100000");
}

static void test_rejects_segment_beyond_ram(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_paddr = T_RAM - PAGE_SIZE;	/* bss runs past the end */
	e.u.eh.e_entry = T_RAM - PAGE_SIZE;
	t_rejects(state, &e, -E2BIG, "does not fit 4 MiB");
	t_ph(&e, 0)->p_paddr = 1ull << 40;
	t_rejects(state, &e, -E2BIG, "does not fit");
}

static void test_rejects_address_overflow(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	/* paddr + memsz wraps to a small address that would look in range */
	t_ph(&e, 0)->p_paddr = UINT64_MAX - 0xfff;
	e.u.eh.e_entry = UINT64_MAX - 0xfff;
	t_rejects(state, &e, -E2BIG, "does not fit");
	t_ph(&e, 0)->p_paddr = T_BASE;
	t_ph(&e, 0)->p_memsz = UINT64_MAX - T_BASE + 0x2000;
	t_rejects(state, &e, -E2BIG, "does not fit");
}

static void test_rejects_pt_interp(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phnum = 2;
	t_ph(&e, 1)->p_type = PT_INTERP;
	t_ph(&e, 1)->p_offset = T_PAYLOAD;
	t_ph(&e, 1)->p_filesz = 4;
	t_rejects(state, &e, -ENOEXEC, "dynamically linked");
}

static void test_rejects_pt_dynamic(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phnum = 2;
	t_ph(&e, 1)->p_type = PT_DYNAMIC;
	t_rejects(state, &e, -ENOEXEC, "dynamically linked");
}

static void test_rejects_entry_outside_segments(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_entry = 0x200000;
	t_rejects(state, &e, -ENOEXEC, "entry point 0x200000");
	/* one past the end of the segment */
	e.u.eh.e_entry = T_BASE + T_MEMSZ;
	t_rejects(state, &e, -ENOEXEC, "entry point");
	e.u.eh.e_entry = T_BASE - 1;
	t_rejects(state, &e, -ENOEXEC, "entry point");
}

static void test_rejects_entry_in_data_segment(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	t_ph(&e, 0)->p_flags = PF_R | PF_W;	/* in range, but not executable */
	t_rejects(state, &e, -ENOEXEC, "not in an executable segment");
}

static void test_rejects_truncated_header(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.len = sizeof(Elf64_Ehdr) - 1;
	t_rejects(state, &e, -ENOEXEC, "not an ELF file");
	e.len = 0;
	t_rejects(state, &e, -ENOEXEC, "not an ELF file");
}

/* A bad second segment must stop the load before the good first is copied. */
static void test_rejects_before_copying_anything(void **state)
{
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_phnum = 2;
	*t_ph(&e, 1) = *t_ph(&e, 0);
	t_ph(&e, 1)->p_paddr = 0x1000;
	t_rejects(state, &e, -ENOEXEC, "segment 1");
}

/* --- loading from files ---------------------------------------------------- */

static void t_write(const char *path, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write_full(fd, p, n), 0);
	close(fd);
}

static void test_file_nonexistent(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	char *dir = t_tmpdir();
	const char *path = t_path(dir, "missing.elf");

	err_clear();
	assert_int_equal(loader_load_file(m, path, &img), -ENOENT);
	t_assert_msg_has(-ENOENT, "cannot open guest");
	t_assert_msg_has(-ENOENT, path);
	t_tmpdir_free(dir);
}

static void test_file_directory(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	char *dir = t_tmpdir();

	err_clear();
	assert_int_equal(loader_load_file(m, dir, &img), -EINVAL);
	t_assert_msg_has(-EINVAL, "not a regular file");
	t_assert_ram_untouched(m);
	t_tmpdir_free(dir);
}

static void test_file_empty(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	char *dir = t_tmpdir();
	const char *path = t_path(dir, "empty.elf");

	t_write(path, "", 0);
	err_clear();
	assert_int_equal(loader_load_file(m, path, &img), -ENOEXEC);
	t_assert_msg_has(-ENOEXEC, "empty");
	t_assert_ram_untouched(m);
	t_tmpdir_free(dir);
}

/* A bad file's detail says which file and what is wrong with it. */
static void test_file_malformed_names_path(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	char *dir = t_tmpdir();
	const char *path = t_path(dir, "dyn.elf");
	struct t_elf e;

	t_elf_valid(&e);
	e.u.eh.e_type = ET_DYN;
	t_write(path, e.u.b, e.len);
	err_clear();
	assert_int_equal(loader_load_file(m, path, &img), -ENOEXEC);
	t_assert_msg_has(-ENOEXEC, path);
	t_assert_msg_has(-ENOEXEC, "ET_EXEC");
	t_assert_ram_untouched(m);
	t_tmpdir_free(dir);
}

static void test_file_valid_image(void **state)
{
	struct guest_mem *m = *state;
	struct elf_image img;
	char *dir = t_tmpdir();
	const char *path = t_path(dir, "min.elf");
	struct t_elf e;

	t_elf_valid(&e);
	t_write(path, e.u.b, e.len);
	assert_int_equal(loader_load_file(m, path, &img), 0);
	assert_true(img.entry == T_ENTRY);
	assert_true(img.image_end == T_BASE + 0x2000);
	assert_memory_equal(m->host + T_BASE, e.u.b + T_PAYLOAD, T_FILESZ);
	t_tmpdir_free(dir);
}

/* The real "hello" guest: every PT_LOAD's file bytes land at its paddr. */
static void test_file_hello_guest(void **state)
{
	struct guest_mem *m = *state;
	const char *path = t_guest("hello");
	struct elf_image img;
	const Elf64_Ehdr *eh;
	const Elf64_Phdr *ph;
	char *data;
	struct stat st;
	unsigned loads = 0;
	int fd;

	assert_int_equal(loader_load_file(m, path, &img), 0);
	assert_true(img.entry >= UMIG_IMAGE_MIN_GPA);
	assert_true(img.image_end > img.entry);
	assert_true(img.image_end <= T_RAM);
	assert_int_equal(img.image_end % PAGE_SIZE, 0);
	assert_true(img.nsegs >= 1);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	data = malloc(st.st_size);
	assert_non_null(data);
	assert_int_equal(read_full(fd, data, st.st_size), 0);
	close(fd);
	eh = (const Elf64_Ehdr *)data;
	assert_true(img.entry == eh->e_entry);
	ph = (const Elf64_Phdr *)(data + eh->e_phoff);
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		loads++;
		assert_memory_equal(m->host + ph[i].p_paddr, data + ph[i].p_offset,
				    ph[i].p_filesz);
		assert_true(ALIGN_UP(ph[i].p_paddr + ph[i].p_memsz, PAGE_SIZE) <=
			    img.image_end);
	}
	assert_int_equal(loads, img.nsegs);
	free(data);
}

#define T_CASE(f) cmocka_unit_test_setup_teardown(f, t_setup, t_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T_CASE(test_valid_image_loads),
		T_CASE(test_segment_ending_at_ram_end_loads),
		T_CASE(test_two_segments_and_a_note),
		T_CASE(test_boot_params_written),
		T_CASE(test_boot_params_cmdline_limit),
		T_CASE(test_entry_state),
		T_CASE(test_machine_tables),
		T_CASE(test_rejects_bad_magic),
		T_CASE(test_rejects_32bit_class),
		T_CASE(test_rejects_big_endian),
		T_CASE(test_rejects_wrong_machine),
		T_CASE(test_rejects_et_dyn),
		T_CASE(test_rejects_wrong_phentsize),
		T_CASE(test_rejects_phnum_zero),
		T_CASE(test_rejects_phnum_huge),
		T_CASE(test_rejects_phoff_beyond_file),
		T_CASE(test_rejects_segment_offset_beyond_file),
		T_CASE(test_rejects_segment_filesz_beyond_file),
		T_CASE(test_rejects_filesz_over_memsz),
		T_CASE(test_rejects_segment_below_1mib),
		T_CASE(test_rejects_segment_beyond_ram),
		T_CASE(test_rejects_address_overflow),
		T_CASE(test_rejects_pt_interp),
		T_CASE(test_rejects_pt_dynamic),
		T_CASE(test_rejects_entry_outside_segments),
		T_CASE(test_rejects_entry_in_data_segment),
		T_CASE(test_rejects_truncated_header),
		T_CASE(test_rejects_before_copying_anything),
		T_CASE(test_file_nonexistent),
		T_CASE(test_file_directory),
		T_CASE(test_file_empty),
		T_CASE(test_file_malformed_names_path),
		T_CASE(test_file_valid_image),
		T_CASE(test_file_hello_guest),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
