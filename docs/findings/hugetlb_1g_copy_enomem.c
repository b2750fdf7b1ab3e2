// UFFDIO_COPY into a 1 GiB hugetlb page fails ENOMEM when its source is a
// valid buffer that is merely not resident, if the 1 GiB pool has no free
// page beyond those already reserved. The kernel copies the source under
// mmap_lock with page faults disabled; when that fails it drops the lock to
// fault the source in and needs a huge page to hold the bytes meanwhile.
// For 2 MiB pages that page can come from the buddy allocator; for 1 GiB
// pages (alloc_migrate_hugetlb_folio: "if (hstate_is_gigantic(h)) return
// NULL") only from the pool's unreserved pages. Exits 1 where so.
//
// cc -o hugetlb_1g_copy_enomem hugetlb_1g_copy_enomem.c
// Run as root on an otherwise idle machine that can find two free 1 GiB
// pages (it raises the 1 GiB pool to what it needs and restores it).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define GIB (1UL << 30)
#define POOL "/sys/kernel/mm/hugepages/hugepages-1048576kB/"

static long pool_read(const char *name)
{
	char path[128];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), POOL "%s", name);
	f = fopen(path, "r");
	if (!f || fscanf(f, "%ld", &v) != 1)
		v = -1;
	if (f)
		fclose(f);
	return v;
}

static int pool_set(long nr)
{
	FILE *f = fopen(POOL "nr_hugepages", "w");
	int ok;

	if (!f)
		return -1;
	ok = fprintf(f, "%ld\n", nr) > 0;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

// One 1 GiB page of a hugetlb memfd, mapped and registered MISSING; then
// UFFDIO_COPY of the whole page from an untouched anonymous buffer. Returns
// 0 or the errno, and leaves the pool as it found it.
static int copy_from_untouched(void)
{
	int fd = memfd_create("uffd-1g", MFD_HUGETLB | MFD_HUGE_1GB);
	int uffd = syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { 0 };
	struct uffdio_copy copy = { 0 };
	char *dst, *src;
	int err = 0;

	if (fd < 0 || uffd < 0 || ftruncate(fd, GIB) || ioctl(uffd, UFFDIO_API, &api)) {
		perror("setup");
		exit(2);
	}
	dst = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	src = mmap(NULL, GIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (dst == MAP_FAILED || src == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	reg.range.start = (unsigned long)dst;
	reg.range.len = GIB;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		perror("UFFDIO_REGISTER");
		exit(2);
	}
	copy.dst = (unsigned long)dst;
	copy.src = (unsigned long)src;
	copy.len = GIB;
	if (ioctl(uffd, UFFDIO_COPY, &copy))
		err = errno;
	else if (dst[GIB - 1] != 0)
		err = -1;
	munmap(dst, GIB);
	munmap(src, GIB);
	close(uffd);
	close(fd);
	return err;
}

int main(void)
{
	long nr = pool_read("nr_hugepages"), in_use, got;
	int exact, spare, rc = 0;

	if (nr < 0) {
		fprintf(stderr, "no 1 GiB hugetlb pool (" POOL ")\n");
		return 2;
	}
	in_use = nr - pool_read("free_hugepages") + pool_read("resv_hugepages");

	// The mapping reserves the one page it needs: nothing is left over.
	if (pool_set(in_use + 1) || (got = pool_read("nr_hugepages")) != in_use + 1) {
		fprintf(stderr, "cannot size the 1 GiB pool to %ld pages\n", in_use + 1);
		pool_set(nr);
		return 2;
	}
	exact = copy_from_untouched();

	// One unreserved page more, for the bounce: the same copy succeeds.
	if (pool_set(in_use + 2) || pool_read("nr_hugepages") != in_use + 2) {
		fprintf(stderr, "cannot find a second free 1 GiB page\n");
		pool_set(nr);
		return 2;
	}
	spare = copy_from_untouched();
	pool_set(nr);

	printf("pool of exactly the reserved pages: UFFDIO_COPY %s\n", exact ? strerror(exact) : "ok");
	printf("pool with one spare page:           UFFDIO_COPY %s\n", spare ? strerror(spare) : "ok");
	if (exact == ENOMEM && spare == 0) {
		printf("SURPRISE: a valid, non-resident source fails ENOMEM without a spare 1 GiB page\n");
		rc = 1;
	}
	return rc;
}
