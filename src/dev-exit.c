/*
 * dev-exit.c - the exit device: a write to port 0x501 ends the guest, and
 * its value (0..255) becomes umig's exit status.  Stateless.
 */
#include "umig/devices.h"
#include "umig/guest-abi.h"
#include "umig/vm.h"

#define EXIT_ID 0x54495845u /* "EXIT" */

static void exit_out(struct device *d, uint16_t port, unsigned size, uint32_t val)
{
	vm_guest_exit(d->vm, val & 0xff);
}

static const struct device_ops exit_ops = {
	.name = "exit",
	.id = EXIT_ID,
	.port = UMIG_PORT_EXIT,
	.nports = 1,
	.out = exit_out,
};

int exit_register(struct pio_bus *b, struct vm *vm)
{
	return pio_register(b, &exit_ops, vm, NULL);
}
