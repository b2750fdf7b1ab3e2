// Once the process that opened a userfaultfd is gone (here it exits; in
// tests/memcg.rs the memcg OOM killer ends it while a fault of it is
// blocked), its uffd still answers in the process it was passed to, but
// the ioctls disagree on how to say "the mm is gone": UFFDIO_COPY and
// UFFDIO_ZEROPAGE fail ESRCH, UFFDIO_REGISTER and UFFDIO_UNREGISTER fail
// ENOMEM (their `mmget_not_zero()` failure returns the -ENOMEM set just
// before the check), and UFFDIO_WAKE succeeds. Exits 1 where so.
//
// cc -o memcg_dead_mm_errnos memcg_dead_mm_errnos.c
// Run as root, or with vm.unprivileged_userfaultfd=1 (UFFD_USER_MODE_ONLY).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void send_fd(int sock, int fd)
{
	char byte = 0, cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { &byte, 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &msg, 0) != 1)
		perror("sendmsg");
}

static int recv_fd(int sock)
{
	char byte, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { &byte, 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
			      .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	int fd = -1;

	if (recvmsg(sock, &msg, 0) == 1 && CMSG_FIRSTHDR(&msg))
		memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof(int));
	return fd;
}

static const char *result(int r)
{
	return r ? strerror(errno) : "ok";
}

int main(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	char *area = mmap(NULL, ps, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *src = mmap(NULL, ps, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int sv[2], uffd, status, e_copy, e_reg;

	if (area == MAP_FAILED || src == MAP_FAILED ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		return perror("setup"), 2;
	if (fork() == 0) {
		/* The child registers its own copy of `area`, hands the uffd
		 * over and exits: its mm dies with it. */
		struct uffdio_api api = { .api = UFFD_API };
		struct uffdio_register reg = {
			.range = { (unsigned long)area, ps },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		int fd = syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);

		if (fd < 0 || ioctl(fd, UFFDIO_API, &api) ||
		    ioctl(fd, UFFDIO_REGISTER, &reg))
			return perror("child: userfaultfd"), 2;
		send_fd(sv[1], fd);
		_exit(0);
	}
	uffd = recv_fd(sv[0]);
	wait(&status);
	if (uffd < 0)
		return fprintf(stderr, "no uffd received\n"), 2;

	struct uffdio_copy copy = { (unsigned long)area, (unsigned long)src, ps, 0, 0 };
	struct uffdio_zeropage zp = { { (unsigned long)area, ps }, 0, 0 };
	struct uffdio_range range = { (unsigned long)area, ps };
	struct uffdio_register reg = { { (unsigned long)area, ps },
				       UFFDIO_REGISTER_MODE_MISSING, 0 };
	int r;

	r = ioctl(uffd, UFFDIO_COPY, &copy);
	e_copy = r ? errno : 0;
	printf("UFFDIO_COPY:       %s (copy field %lld)\n", result(r), (long long)copy.copy);
	r = ioctl(uffd, UFFDIO_ZEROPAGE, &zp);
	printf("UFFDIO_ZEROPAGE:   %s (zeropage field %lld)\n", result(r), (long long)zp.zeropage);
	r = ioctl(uffd, UFFDIO_WAKE, &range);
	printf("UFFDIO_WAKE:       %s\n", result(r));
	r = ioctl(uffd, UFFDIO_UNREGISTER, &range);
	printf("UFFDIO_UNREGISTER: %s\n", result(r));
	r = ioctl(uffd, UFFDIO_REGISTER, &reg);
	e_reg = r ? errno : 0;
	printf("UFFDIO_REGISTER:   %s\n", result(r));
	if (e_copy == ESRCH && e_reg == ENOMEM) {
		printf("SURPRISE: the fills say ESRCH, (un)registration ENOMEM for the same dead mm\n");
		return 1;
	}
	return 0;
}
