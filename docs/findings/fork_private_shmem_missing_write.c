// Does a fork in another thread turn a read-resolved page of a MAP_PRIVATE
// shmem (memfd) mapping registered MISSING back into a missing one, so that
// the next write faults MISSING|WRITE?
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
#include <stdatomic.h>
#define NP 4096
static long ps; static char *dst, *src; static int uffd;
static atomic_int stop, bad, faults, wfaults;
static int use_fork, use_memfd;
static void *handler(void *a) {
  struct uffd_msg m;
  while (!stop) {
    struct pollfd p = { uffd, POLLIN };
    if (poll(&p, 1, 10) <= 0) continue;
    if (read(uffd, &m, sizeof m) != sizeof m) continue;
    if (m.event != UFFD_EVENT_PAGEFAULT) { fprintf(stderr, "event %d\n", m.event); continue; }
    faults++;
    if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) wfaults++;
    struct uffdio_copy c = { .dst = m.arg.pagefault.address & ~(ps - 1), .src = (unsigned long)src, .len = ps };
    if (ioctl(uffd, UFFDIO_COPY, &c)) {
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
  ps = sysconf(_SC_PAGESIZE);
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
    for (long i = 0; i < 4; i++) pthread_create(&w[i], 0, worker, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(w[i], 0);
    stop = 1; pthread_join(h, 0); pthread_join(f, 0);
    for (long i = 0; i < NP; i++) { int v = *(int *)(dst + i * ps); if (v != 4) { bad++; if (bad < 5) fprintf(stderr, "round %d page %ld holds %d, expected 4\n", round, i, v); } }
    close(uffd); munmap(dst, NP * ps);
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, NP * ps);
  }
  printf("fork=%d memfd=%d faults=%d write-faults=%d pages-with-lost-updates=%d\n", use_fork, use_memfd, faults, wfaults, bad);
  return 0;
}
