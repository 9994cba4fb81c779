/*
 * loader.c - load a static x86-64 ELF executable into guest RAM; see loader.h.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "umig/guest-abi.h"
#include "umig/loader.h"
#include "umig/util.h"

static int check_ehdr(const Elf64_Ehdr *eh, size_t len)
{
	if (len < sizeof(*eh) || memcmp(eh->e_ident, ELFMAG, SELFMAG))
		return err_set(-ENOEXEC, "not an ELF file (bad magic)");
	if (eh->e_ident[EI_CLASS] != ELFCLASS64)
		return err_set(-ENOEXEC, "not a 64-bit ELF file (EI_CLASS %u)",
			       eh->e_ident[EI_CLASS]);
	if (eh->e_ident[EI_DATA] != ELFDATA2LSB)
		return err_set(-ENOEXEC, "not a little-endian ELF file");
	if (eh->e_machine != EM_X86_64)
		return err_set(-ENOEXEC, "ELF machine %u is not x86-64", eh->e_machine);
	if (eh->e_type != ET_EXEC)
		return err_set(-ENOEXEC, "ELF type %u: guests must be static executables (ET_EXEC)",
			       eh->e_type);
	if (eh->e_phentsize != sizeof(Elf64_Phdr))
		return err_set(-ENOEXEC, "ELF program header size %u (expected %zu)",
			       eh->e_phentsize, sizeof(Elf64_Phdr));
	if (eh->e_phnum == 0 || eh->e_phnum > 64)
		return err_set(-ENOEXEC, "ELF has %u program headers", eh->e_phnum);
	if (eh->e_phoff > len || (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > len - eh->e_phoff)
		return err_set(-ENOEXEC, "ELF program headers lie outside the file");
	if (eh->e_phoff % 8)
		return err_set(-ENOEXEC, "ELF program headers at a misaligned offset 0x%llx",
			       (unsigned long long)eh->e_phoff);
	return 0;
}

static int check_phdr(const struct guest_mem *m, const Elf64_Phdr *ph, unsigned i, size_t len)
{
	if (ph->p_type == PT_INTERP || ph->p_type == PT_DYNAMIC)
		return err_set(-ENOEXEC, "ELF is dynamically linked; guests must be static");
	if (ph->p_type != PT_LOAD)
		return 0;
	if (ph->p_filesz > ph->p_memsz)
		return err_set(-ENOEXEC, "segment %u: file size exceeds memory size", i);
	if (ph->p_offset > len || ph->p_filesz > len - ph->p_offset)
		return err_set(-ENOEXEC, "segment %u: data lies outside the file", i);
	if (ph->p_paddr < UMIG_IMAGE_MIN_GPA)
		return err_set(-ENOEXEC, "segment %u at 0x%llx is below 0x%llx", i,
			       (unsigned long long)ph->p_paddr, UMIG_IMAGE_MIN_GPA);
	if (!mem_range_ok(m, ph->p_paddr, ph->p_memsz))
		return err_set(-E2BIG, "segment %u (0x%llx + 0x%llx) does not fit %llu MiB of guest RAM",
			       i, (unsigned long long)ph->p_paddr,
			       (unsigned long long)ph->p_memsz,
			       (unsigned long long)(m->size >> 20));
	return 0;
}

int loader_load_elf(struct guest_mem *m, const void *data, size_t len,
		    struct elf_image *out)
{
	const Elf64_Ehdr *eh = data;
	const Elf64_Phdr *ph;
	bool entry_ok = false;
	int ret;

	memset(out, 0, sizeof(*out));
	ret = check_ehdr(eh, len);
	if (ret < 0)
		return ret;
	ph = (const Elf64_Phdr *)((const char *)data + eh->e_phoff);
	/* validate everything before touching guest RAM */
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		ret = check_phdr(m, &ph[i], i, len);
		if (ret < 0)
			return ret;
		if (ph[i].p_type == PT_LOAD && (ph[i].p_flags & PF_X) &&
		    eh->e_entry >= ph[i].p_paddr && eh->e_entry - ph[i].p_paddr < ph[i].p_memsz)
			entry_ok = true;
	}
	if (!entry_ok)
		return err_set(-ENOEXEC, "entry point 0x%llx is not in an executable segment",
			       (unsigned long long)eh->e_entry);
	for (unsigned i = 0; i < eh->e_phnum; i++) {
		if (ph[i].p_type != PT_LOAD)
			continue;
		memcpy(m->host + ph[i].p_paddr, (const char *)data + ph[i].p_offset,
		       ph[i].p_filesz);
		memset(m->host + ph[i].p_paddr + ph[i].p_filesz, 0,
		       ph[i].p_memsz - ph[i].p_filesz);
		out->image_end = MAX(out->image_end,
				     ALIGN_UP(ph[i].p_paddr + ph[i].p_memsz, PAGE_SIZE));
		out->nsegs++;
	}
	if (!out->nsegs)
		return err_set(-ENOEXEC, "ELF has no loadable segment");
	out->entry = eh->e_entry;
	return 0;
}

int loader_load_file(struct guest_mem *m, const char *path, struct elf_image *out)
{
	struct stat st;
	void *data;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(-errno, "cannot open guest '%s': %s", path, strerror(errno));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return err_set(-EINVAL, "guest '%s' is not a regular file", path);
	}
	if (st.st_size == 0) {
		close(fd);
		return err_set(-ENOEXEC, "guest '%s': not an ELF file (empty)", path);
	}
	data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (data == MAP_FAILED)
		return err_set(-errno, "cannot read guest '%s': %s", path, strerror(errno));
	ret = loader_load_elf(m, data, st.st_size, out);
	munmap(data, st.st_size);
	if (ret < 0)
		return err_set(ret, "guest '%s': %s", path, err_msg(ret));
	return 0;
}

int loader_write_boot_params(struct guest_mem *m, const struct elf_image *img,
			     const char *cmdline, unsigned ncpus)
{
	struct umig_boot_params *bp = (void *)(m->host + UMIG_BOOT_PARAMS_GPA);
	size_t n = cmdline ? strlen(cmdline) : 0;

	if (n >= UMIG_CMDLINE_MAX)
		return err_set(-E2BIG, "command line is %zu bytes; at most %u fit",
			       n, UMIG_CMDLINE_MAX - 1);
	if (img->image_end > m->size)
		return err_set(-E2BIG, "guest image does not fit guest RAM");
	if (ncpus < 1 || ncpus > UMIG_MAX_CPUS)
		return err_set(-EINVAL, "%u vCPUs: umig runs 1..%u", ncpus, UMIG_MAX_CPUS);
	memset(bp, 0, sizeof(*bp));
	bp->magic = UMIG_BOOT_MAGIC;
	bp->version = UMIG_BOOT_VERSION;
	bp->cmdline_len = n;
	bp->mem_size = m->size;
	bp->free_start = img->image_end;
	bp->free_end = m->size;
	if (n)
		memcpy(bp->cmdline, cmdline, n);
	bp->ncpus = ncpus;
	bp->cpu_model = UMIG_CPU_MODEL_ID;
	return 0;
}

/*
 * Page-table entry bits.  Accessed and dirty are preset so that the CPU
 * never writes the tables: they stay clean for dirty tracking, and a
 * post-copy destination never takes a write fault on them.
 */
#define PTE_P   0x001ull
#define PTE_RW  0x002ull
#define PTE_A   0x020ull
#define PTE_D   0x040ull
#define PTE_PS  0x080ull
#define GIB     (1ull << 30)

int loader_setup_machine(struct guest_mem *m)
{
	uint64_t *gdt = (void *)(m->host + UMIG_GDT_GPA);
	uint64_t *pml4 = (void *)(m->host + UMIG_PML4_GPA);
	uint64_t gibs = ALIGN_UP(m->size, GIB) / GIB;
	uint64_t tss = UMIG_TSS_GPA;

	if (m->size < UMIG_IMAGE_MIN_GPA || gibs > UMIG_PDPT_COUNT * 512ull)
		return err_set(-E2BIG, "guest RAM of %llu MiB cannot be identity-mapped (1 MiB .. 1 TiB)",
			       (unsigned long long)(m->size >> 20));
	memset(m->host + UMIG_GDT_GPA, 0, UMIG_PDPT_GPA + UMIG_PDPT_COUNT * PAGE_SIZE - UMIG_GDT_GPA);
	gdt[UMIG_SEL_CODE64 / 8] = UMIG_GDT_CODE64;
	gdt[UMIG_SEL_DATA / 8] = UMIG_GDT_DATA;
	/* a 16-byte 64-bit TSS descriptor: type 0xb (busy), present */
	gdt[UMIG_SEL_TSS / 8] = UMIG_TSS_LIMIT | (tss & 0xffffff) << 16 | 0x8bull << 40 |
				((tss >> 24) & 0xff) << 56;
	gdt[UMIG_SEL_TSS / 8 + 1] = tss >> 32;
	for (uint64_t i = 0; i < UMIG_PDPT_COUNT; i++)
		pml4[i] = (UMIG_PDPT_GPA + i * PAGE_SIZE) | PTE_P | PTE_RW | PTE_A;
	/* 1 GiB pages over all of RAM, rounded up to a GiB */
	for (uint64_t g = 0; g < gibs; g++) {
		uint64_t *pdpt = (void *)(m->host + UMIG_PDPT_GPA);

		pdpt[g] = g * GIB | PTE_P | PTE_RW | PTE_A | PTE_D | PTE_PS;
	}
	return 0;
}

void loader_entry_state(const struct elf_image *img, unsigned cpu, struct cpu_state *s)
{
	memset(s, 0, sizeof(*s));
	s->rip = img->entry;
	s->gpr[GPR_RSP] = UMIG_STACK_TOP - (uint64_t)cpu * UMIG_CPU_STACK;
	s->gpr[GPR_RDI] = UMIG_BOOT_PARAMS_GPA;
	s->gpr[GPR_RSI] = cpu;
	s->rflags = 0x2; /* bit 1 is always set; interrupts off */
	s->seg[SEG_CS] = UMIG_SEL_CODE64;
	s->seg[SEG_SS] = s->seg[SEG_DS] = s->seg[SEG_ES] = UMIG_SEL_DATA;
	s->seg[SEG_FS] = s->seg[SEG_GS] = UMIG_SEL_DATA;
	s->gdtr.base = UMIG_GDT_GPA;
	s->gdtr.limit = UMIG_GDT_LIMIT;
	s->cr0 = UMIG_ENTRY_CR0;
	s->cr3 = UMIG_PML4_GPA;
	s->cr4 = UMIG_ENTRY_CR4;
	s->efer = UMIG_ENTRY_EFER;
	s->fcw = UMIG_ENTRY_FCW;
	s->ftw = 0xffff;	/* every x87 register empty */
	s->mxcsr = UMIG_ENTRY_MXCSR;
}
