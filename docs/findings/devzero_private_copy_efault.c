// A MAP_PRIVATE mapping of /dev/zero registers with userfaultfd as an
// anonymous VMA (UFFDIO_REGISTER grants COPY and ZEROPAGE) and delivers
// MISSING faults, but UFFDIO_COPY and UFFDIO_ZEROPAGE into it fail EFAULT:
// the fill path compares the offset with the size of the VMA's file, and
// /dev/zero's inode has size 0. The same calls on MAP_PRIVATE|MAP_ANONYMOUS
// memory succeed.
//
// cc -o devzero_private_copy_efault devzero_private_copy_efault.c -lpthread
// Run as root, or with vm.unprivileged_userfaultfd=1 (UFFD_USER_MODE_ONLY).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static long ps;

static void *toucher(void *p)
{
	return (void *)(long)*(volatile char *)p;
}

/* Registers `area` MISSING, faults on it from a thread, then tries to
 * resolve the fault with ZEROPAGE and COPY; prints what each returns. */
static int try(const char *what, char *area)
{
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = {
		.range = { (unsigned long)area, ps },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		perror(what);
		return 2;
	}
	printf("%s: registered, ioctls %#llx\n", what, (unsigned long long)reg.ioctls);

	pthread_t t;
	pthread_create(&t, NULL, toucher, area);
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };
	struct uffd_msg msg;
	if (poll(&pfd, 1, 5000) != 1 || read(uffd, &msg, sizeof(msg)) != sizeof(msg)) {
		printf("%s: no fault message\n", what);
		return 2;
	}
	printf("%s: fault at %#llx\n", what, (unsigned long long)msg.arg.pagefault.address);

	struct uffdio_zeropage zp = { .range = { (unsigned long)area, ps } };
	int rz = ioctl(uffd, UFFDIO_ZEROPAGE, &zp);
	printf("%s: ZEROPAGE %s (zeropage field %lld)\n", what, rz ? strerror(errno) : "ok",
	       (long long)zp.zeropage);
	int rc = 0;
	if (rz) {
		char *src = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memset(src, 0x5a, ps);
		struct uffdio_copy cp = { .dst = (unsigned long)area, .src = (unsigned long)src, .len = ps };
		rc = ioctl(uffd, UFFDIO_COPY, &cp);
		printf("%s: COPY %s (copy field %lld)\n", what, rc ? strerror(errno) : "ok",
		       (long long)cp.copy);
	}
	/* Unresolved: closing the uffd wakes the thread, which then faults normally. */
	close(uffd);
	pthread_join(t, NULL);
	return rz && rc ? 1 : 0;
}

int main(void)
{
	ps = sysconf(_SC_PAGESIZE);
	char *anon = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int zero = open("/dev/zero", O_RDWR);
	char *dz = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE, zero, 0);
	if (anon == MAP_FAILED || dz == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	int a = try("anonymous", anon);
	int d = try("/dev/zero private", dz);
	printf(d == 1 && a == 0 ? "BUG: the fault on /dev/zero cannot be resolved\n" : "ok\n");
	return d;
}
