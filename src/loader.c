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
			     const char *cmdline)
{
	struct umig_boot_params *bp = (void *)(m->host + UMIG_BOOT_PARAMS_GPA);
	size_t n = cmdline ? strlen(cmdline) : 0;

	if (n >= UMIG_CMDLINE_MAX)
		return err_set(-E2BIG, "command line is %zu bytes; at most %u fit",
			       n, UMIG_CMDLINE_MAX - 1);
	if (img->image_end > m->size)
		return err_set(-E2BIG, "guest image does not fit guest RAM");
	memset(bp, 0, sizeof(*bp));
	bp->magic = UMIG_BOOT_MAGIC;
	bp->version = UMIG_BOOT_VERSION;
	bp->cmdline_len = n;
	bp->mem_size = m->size;
	bp->free_start = img->image_end;
	bp->free_end = m->size;
	if (n)
		memcpy(bp->cmdline, cmdline, n);
	return 0;
}

void loader_entry_state(const struct elf_image *img, struct cpu_state *s)
{
	s->rip = img->entry;
	s->gpr[GPR_RSP] = UMIG_STACK_TOP;
	s->gpr[GPR_RDI] = UMIG_BOOT_PARAMS_GPA;
	s->rflags = 0x2; /* bit 1 is always set; interrupts off */
}
