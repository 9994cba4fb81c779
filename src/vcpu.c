/*
 * vcpu.c - backend selection and dispatch for struct vcpu; see vcpu.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "umig/util.h"
#include "umig/vcpu-kvm.h"

static const struct vcpu_ops *const vcpu_backends[] = {
	&vcpu_unicorn_ops,	/* the default: runs anywhere */
	&vcpu_kvm_ops,
};

/* "auto": KVM where /dev/kvm opens and speaks the API umig needs. */
static const char *vcpu_auto(void)
{
	int fd;

	if (vcpu_kvm_open(&fd) < 0)
		return "unicorn";
	close(fd);
	return "kvm";
}

int vcpu_create(struct vcpu **out, const char *backend, unsigned index,
		struct guest_mem *mem, struct pio_bus *bus)
{
	const struct vcpu_ops *ops = NULL;
	struct vcpu *v;
	int ret;

	if (backend && !strcmp(backend, "auto"))
		backend = vcpu_auto();
	for (size_t i = 0; i < ARRAY_SIZE(vcpu_backends); i++)
		if (!backend || !strcmp(backend, vcpu_backends[i]->name)) {
			ops = vcpu_backends[i];
			break;
		}
	if (!ops)
		return err_set(-ENOENT, "unknown vCPU backend '%s' (available: unicorn, kvm, auto)",
			       backend);
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->ops = ops;
	v->index = index;
	v->mem = mem;
	v->bus = bus;
	ret = ops->create(v);
	if (ret < 0) {
		free(v);
		return ret;
	}
	*out = v;
	return 0;
}

void vcpu_destroy(struct vcpu *v)
{
	if (!v)
		return;
	v->ops->destroy(v);
	free(v);
}

int vcpu_run(struct vcpu *v) { return v->ops->run(v); }
void vcpu_kick(struct vcpu *v) { v->ops->kick(v); }
int vcpu_get_state(struct vcpu *v, struct cpu_state *s) { return v->ops->get_state(v, s); }
int vcpu_set_state(struct vcpu *v, const struct cpu_state *s) { return v->ops->set_state(v, s); }
const char *vcpu_backend_name(const struct vcpu *v) { return v->ops->name; }

int vcpu_flush_code(struct vcpu *v, uint64_t gpa, uint64_t len)
{
	return v->ops->flush_code(v, gpa, len);
}
