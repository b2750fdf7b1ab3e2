// A MISSING fault with WRITE set on a page that is mapped: on a MAP_PRIVATE
// shmem (memfd) mapping registered MISSING, worker threads read each page
// before writing it while another thread forks. After a fork the pages are
// COW-shared; two threads writing one page at once both take a protection
// fault, one copies it (wp_page_copy clears the PTE, flushes, sets the new
// one) and the other can read the cleared PTE and reach shmem_fault, which
// reports the hole as MISSING|WRITE. For each such message this program
// records whether /proc/self/pagemap showed the page mapped when the message
// was read and what UFFDIO_COPY returned (EEXIST: the page was there).
#define _GNU_SOURCE
#include <linux/userfaultfd.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <pthread.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <errno.h>
#include <time.h>
#include <stdatomic.h>
#define NP 4096
static long ps; static char *dst, *src; static int uffd, pagemap;
static atomic_int stop, bad, faults, wfaults;
static atomic_int w_mapped, w_eexist, w_filled, w_other;
static int use_fork, use_memfd, nw;
static int mapped(unsigned long a) {
  unsigned long long e = 0;
  if (pread(pagemap, &e, 8, a / ps * 8) != 8) return -1;
  return (e >> 63) & 1;
}
static void *handler(void *a) {
  struct uffd_msg m;
  while (!stop) {
    struct pollfd p = { uffd, POLLIN };
    if (poll(&p, 1, 10) <= 0) continue;
    if (read(uffd, &m, sizeof m) != sizeof m) continue;
    if (m.event != UFFD_EVENT_PAGEFAULT) { fprintf(stderr, "event %d\n", m.event); continue; }
    faults++;
    int write = !!(m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
    struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(ps - 1), .src = (unsigned long)src, .len = ps };
    int was = write ? mapped(c.dst) : 0;
    int rc = ioctl(uffd, UFFDIO_COPY, &c), err = errno;
    if (write) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);  // the clock of bpftrace's nsecs
      wfaults++;
      w_mapped += was == 1;
      if (!rc) w_filled++; else if (err == EEXIST) w_eexist++; else w_other++;
      fprintf(stderr, "MISSING|WRITE t=%lld ns page %ld at %#lx: mapped when read %s, COPY %s\n",
              ts.tv_sec * 1000000000LL + ts.tv_nsec, (long)((c.dst - (unsigned long)dst) / ps),
              (unsigned long)c.dst, was == 1 ? "yes" : "no", rc ? strerror(err) : "filled it");
    }
    if (rc) {
      struct uffdio_range r = { c.dst, ps };
      ioctl(uffd, UFFDIO_WAKE, &r);
    }
  }
  return 0;
}
static void *worker(void *a) {
  long w = (long)a;
  for (long i = 0; i < NP; i++) {
    volatile int *p = (int *)(dst + ((i * 7 + w * 1000) % NP) * ps);
    int v = *p;            // first touch reads
    __atomic_fetch_add((int *)p, 1, __ATOMIC_SEQ_CST);  // then writes
    (void)v;
  }
  return 0;
}
static void *forker(void *a) {
  while (!stop && use_fork == 2) {
    void *m = mmap(0, ps, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    mprotect(m, ps, PROT_READ|PROT_WRITE); munmap(m, ps);
  }
  while (!stop && use_fork == 1) {
    pid_t pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    waitpid(pid, 0, 0);
  }
  return 0;
}
int main(int argc, char **argv) {
  use_fork = argc > 1 ? atoi(argv[1]) : 0;
  use_memfd = argc > 2 ? atoi(argv[2]) : 1;
  nw = argc > 3 ? atoi(argv[3]) : 4;
  if (nw < 1 || nw > 4) nw = 4;
  ps = sysconf(_SC_PAGESIZE);
  pagemap = open("/proc/self/pagemap", O_RDONLY);
  int fd = memfd_create("r", 0); ftruncate(fd, NP * ps);
  src = mmap(0, ps, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0); memset(src, 0, ps);
  for (int round = 0; round < 20; round++) {
    dst = use_memfd ? mmap(0, NP * ps, PROT_READ|PROT_WRITE, MAP_PRIVATE, fd, 0)
                    : mmap(0, NP * ps, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = { .api = UFFD_API }; ioctl(uffd, UFFDIO_API, &api);
    struct uffdio_register reg = { .range = { (unsigned long)dst, NP * ps }, .mode = UFFDIO_REGISTER_MODE_MISSING };
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("register"); return 1; }
    stop = 0;
    pthread_t h, f, w[4];
    pthread_create(&h, 0, handler, 0); pthread_create(&f, 0, forker, 0);
    for (long i = 0; i < nw; i++) pthread_create(&w[i], 0, worker, (void *)i);
    for (int i = 0; i < nw; i++) pthread_join(w[i], 0);
    stop = 1; pthread_join(h, 0); pthread_join(f, 0);
    for (long i = 0; i < NP; i++) {
      int v = *(int *)(dst + i * ps);
      if (v != nw && ++bad < 5) fprintf(stderr, "round %d page %ld holds %d, expected %d\n", round, i, v, nw);
    }
    close(uffd); munmap(dst, NP * ps);
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, NP * ps);
  }
  printf("fork=%d memfd=%d workers=%d faults=%d write-faults=%d (mapped when read %d; COPY EEXIST %d, filled %d, other %d) "
         "pages-with-lost-updates=%d\n", use_fork, use_memfd, nw, faults, wfaults, w_mapped, w_eexist, w_filled, w_other, bad);
  return 0;
}
