// UFFDIO_COPY and UFFDIO_ZEROPAGE onto a guard region (MADV_GUARD_INSTALL,
// 6.13+) of a range registered MISSING: the guard is a PTE marker, which
// mfill_atomic_install_pte() takes for an empty PTE (pte_none_mostly()), so
// the fill replaces the guard with a page and succeeds. Expected (the rule
// "mm: correctly handle UFFD PTE markers" brings): EEXIST, the guard kept.
// Prints what each ioctl answered and whether the guard still holds.
// No argument: private anonymous memory (ZEROPAGE there checks pte_none()
// itself and refuses); "shmem": a MAP_SHARED memfd, where ZEROPAGE goes
// through shmem_mfill_atomic_pte() and overwrites the guard as COPY does.
#define _GNU_SOURCE
#include <linux/userfaultfd.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <errno.h>
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

// 1 if reading addr kills a child with SIGSEGV (the guard holds), else 0.
static int guarded(char *addr) {
  pid_t pid = fork();
  if (pid == 0) { volatile char c = *addr; (void)c; _exit(0); }
  int st; waitpid(pid, &st, 0);
  return WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV;
}

int main(int argc, char **argv) {
  long ps = sysconf(_SC_PAGESIZE);
  int shmem = argc > 1 && !strcmp(argv[1], "shmem");
  int fd = shmem ? memfd_create("guard", 0) : -1;
  if (shmem && ftruncate(fd, 3 * ps)) { perror("memfd"); return 2; }
  char *a = mmap(NULL, 3 * ps, PROT_READ | PROT_WRITE, shmem ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS, fd, 0);
  char *src = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  memset(src, 0x4e, ps);
  if (madvise(a + ps, 2 * ps, MADV_GUARD_INSTALL)) { perror("MADV_GUARD_INSTALL (6.13+)"); return 2; }
  int uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
  struct uffdio_api api = { .api = UFFD_API };
  struct uffdio_register reg = { .range = { (unsigned long)a, 3 * ps }, .mode = UFFDIO_REGISTER_MODE_MISSING };
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) { perror("uffd"); return 2; }
  printf("before: page 1 guarded %d, page 2 guarded %d\n", guarded(a + ps), guarded(a + 2 * ps));
  struct uffdio_copy cp = { .dst = (unsigned long)a + ps, .src = (unsigned long)src, .len = ps };
  int r = ioctl(uffd, UFFDIO_COPY, &cp);
  printf("UFFDIO_COPY onto guard page 1: %d (%s), copy=%lld\n", r, r ? strerror(errno) : "ok", (long long)cp.copy);
  struct uffdio_zeropage zp = { .range = { (unsigned long)a + 2 * ps, ps } };
  r = ioctl(uffd, UFFDIO_ZEROPAGE, &zp);
  printf("UFFDIO_ZEROPAGE onto guard page 2: %d (%s), zeropage=%lld\n", r, r ? strerror(errno) : "ok", (long long)zp.zeropage);
  printf("after: page 1 guarded %d (byte 0x%02x), page 2 guarded %d\n", guarded(a + ps),
         guarded(a + ps) ? 0 : (unsigned char)a[ps], guarded(a + 2 * ps));
  return 0;
}
