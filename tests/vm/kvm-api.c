/*
 * tests/vm/kvm-api.c - does /dev/kvm really work?  (smoke suite of the test VM)
 *
 * Opens /dev/kvm, checks KVM_GET_API_VERSION is 12, creates a VM with one
 * vCPU and runs a four-byte real-mode guest (`out 0x10, al; hlt`), checking
 * the port-I/O exit carries the byte the guest wrote and that the guest then
 * halts.  That is the least a KVM vCPU backend needs, run through nested SVM
 * inside the QEMU TCG test VM.  Exit 0 pass, 77 no /dev/kvm, 1 failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUEST_PHYS 0x1000
#define PORT 0x10

static int fail(const char *what)
{
	fprintf(stderr, "kvm-api: %s: %s\n", what, strerror(errno));
	return 1;
}

static int run_guest(int kvm, int vm)
{
	/* mov al, 0x5a; out 0x10, al; hlt */
	static const uint8_t code[] = { 0xb0, 0x5a, 0xe6, PORT, 0xf4 };
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_run *run;
	uint8_t *mem;
	int vcpu, size, exits = 0;

	mem = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return fail("mmap guest memory");
	memcpy(mem, code, sizeof(code));
	region = (struct kvm_userspace_memory_region){
		.slot = 0, .guest_phys_addr = GUEST_PHYS,
		.memory_size = 0x1000, .userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return fail("KVM_SET_USER_MEMORY_REGION");
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return fail("KVM_CREATE_VCPU");
	size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size <= 0)
		return fail("KVM_GET_VCPU_MMAP_SIZE");
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return fail("mmap kvm_run");

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return fail("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return fail("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = GUEST_PHYS;
	regs.rflags = 0x2;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return fail("KVM_SET_REGS");

	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0)
			return fail("KVM_RUN");
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint8_t v = *((uint8_t *)run + run->io.data_offset);

			if (run->io.direction != KVM_EXIT_IO_OUT || run->io.port != PORT ||
			    run->io.size != 1 || v != 0x5a) {
				fprintf(stderr, "kvm-api: unexpected I/O exit: port 0x%x value 0x%x\n",
					run->io.port, v);
				return 1;
			}
			printf("kvm-api: guest wrote 0x%x to port 0x%x\n", v, PORT);
			exits++;
			break;
		}
		case KVM_EXIT_HLT:
			if (exits != 1) {
				fprintf(stderr, "kvm-api: halted after %d I/O exits, expected 1\n", exits);
				return 1;
			}
			printf("kvm-api: guest halted\n");
			return 0;
		default:
			fprintf(stderr, "kvm-api: unexpected exit reason %u\n", run->exit_reason);
			return 1;
		}
	}
}

int main(void)
{
	int kvm, vm, api;

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		fprintf(stderr, "kvm-api: skip: cannot open /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	printf("kvm-api: KVM_GET_API_VERSION = %d\n", api);
	if (api != KVM_API_VERSION) {
		fprintf(stderr, "kvm-api: API version %d, expected %d\n", api, KVM_API_VERSION);
		return 1;
	}
	if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY) <= 0) {
		fprintf(stderr, "kvm-api: no KVM_CAP_USER_MEMORY\n");
		return 1;
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return fail("KVM_CREATE_VM");
	return run_guest(kvm, vm);
}
