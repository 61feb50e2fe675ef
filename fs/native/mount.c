/* Mounting: as root, mount(2) with an open /dev/fuse descriptor; otherwise fusermount3 (setuid, from
 * Debian's fuse3) mounts and passes the descriptor back over a socket pair. fusermount3 runs with
 * auto_unmount: it stays alive holding the other end of the socket and unmounts when this process
 * dies, so a crashed daemon never leaves a dead mount behind. (For root mounts the daemon starts a
 * watchdog of its own in JavaScript.) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>
#include "plane.h"

extern char **environ;

static void *reap(void *arg) {
  pid_t pid = (pid_t)(intptr_t)arg;
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  return NULL;
}

/* Waits for a child we spawned without blocking the caller (libuv only reaps its own children). */
static void reap_later(pid_t pid) {
  pthread_t t;
  if (pthread_create(&t, NULL, reap, (void *)(intptr_t)pid) == 0) pthread_detach(t);
}

static int receive_fd(int sock) {
  char byte;
  struct iovec iov = { &byte, 1 };
  char ctl[CMSG_SPACE(sizeof(int))];
  struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
  ssize_t n;
  do n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int fd;
      memcpy(&fd, CMSG_DATA(c), sizeof fd);
      return fd;
    }
  return -1;
}

static int mount_with_fusermount(plane *p, const char *mnt, int allow_other, char *err, size_t errlen) {
  int sv[2], ep[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 || pipe2(ep, O_CLOEXEC) != 0) {
    snprintf(err, errlen, "cannot make a socket pair for fusermount3 (%s)", strerror(errno));
    return -1;
  }
  fcntl(sv[0], F_SETFD, FD_CLOEXEC);
  char opts[256];
  snprintf(opts, sizeof opts, "ro,nosuid,nodev,default_permissions,fsname=desfs,subtype=desfs,auto_unmount%s", allow_other ? ",allow_other" : "");
  char commfd[32];
  snprintf(commfd, sizeof commfd, "_FUSE_COMMFD=%d", sv[1]);
  size_t nenv = 0;
  while (environ[nenv]) nenv++;
  char **env = calloc(nenv + 2, sizeof *env);
  if (!env) abort();
  size_t k = 0;
  for (size_t i = 0; i < nenv; i++)
    if (strncmp(environ[i], "_FUSE_COMMFD=", 13) != 0) env[k++] = environ[i];
  env[k++] = commfd;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
  char *argv[] = { "fusermount3", "-o", opts, "--", (char *)mnt, NULL };
  pid_t pid;
  int rc = posix_spawnp(&pid, "fusermount3", &fa, NULL, argv, env);
  posix_spawn_file_actions_destroy(&fa);
  free(env);
  close(sv[1]);
  close(ep[1]);
  if (rc != 0) {
    close(sv[0]); close(ep[0]);
    snprintf(err, errlen, rc == ENOENT ? "fusermount3 not found: install FUSE 3 (Debian: apt-get install fuse3)" : "cannot run fusermount3 (%s)", strerror(rc));
    return -1;
  }
  int fd = receive_fd(sv[0]);
  if (fd < 0) {
    char msg[512] = "";
    ssize_t n = read(ep[0], msg, sizeof msg - 1);
    if (n > 0) msg[n] = 0;
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) msg[--n] = 0;
    snprintf(err, errlen, "fusermount3 could not mount it: %s", msg[0] ? msg : "no reason given");
    close(sv[0]); close(ep[0]);
    reap_later(pid);
    return -1;
  }
  reap_later(pid);
  p->commfd = sv[0];
  p->errfd = ep[0];
  p->root_mount = 0;
  return fd;
}

static int mount_as_root(plane *p, const char *mnt, int allow_other, char *err, size_t errlen) {
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    snprintf(err, errlen, errno == ENOENT ? "/dev/fuse does not exist: load the fuse module (modprobe fuse)" : "cannot open /dev/fuse (%s)", strerror(errno));
    return -1;
  }
  char data[256];
  snprintf(data, sizeof data, "fd=%d,rootmode=40000,user_id=%u,group_id=%u,default_permissions%s", fd, p->uid, p->gid, allow_other ? ",allow_other" : "");
  if (mount("desfs", mnt, "fuse.desfs", MS_NOSUID | MS_NODEV | MS_RDONLY, data) != 0) {
    int e = errno;
    close(fd);
    const char *why = e == ENODEV ? "the kernel has no FUSE support (modprobe fuse)"
                    : e == EPERM ? "permission denied (is this a container without CAP_SYS_ADMIN?)"
                    : e == ENOTDIR ? "the mountpoint is not a directory"
                    : e == ENOENT ? "the mountpoint does not exist"
                    : e == EBUSY ? "something is already mounted there"
                    : e == EINVAL ? "the kernel refused the mountpoint (a special file system such as /proc cannot hold a mount)"
                    : strerror(e);
    snprintf(err, errlen, "%s", why);
    return -1;
  }
  p->root_mount = 1;
  p->commfd = p->errfd = -1;
  return fd;
}

/* The mount's device number, for the BDI (read-ahead) and the connection's abort file. */
static void find_dev(plane *p, const char *mnt) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return;
  char line[4096];
  while (fgets(line, sizeof line, f)) {
    unsigned maj, min;
    char point[4096];
    if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &maj, &min, point) == 3 && strcmp(point, mnt) == 0) {
      p->dev_major = maj;
      p->dev_minor = min;
    }
  }
  fclose(f);
}

int mount_fuse(plane *p, const char *mnt, int allow_other, char *err, size_t errlen) {
  int fd = geteuid() == 0 ? mount_as_root(p, mnt, allow_other, err, errlen) : mount_with_fusermount(p, mnt, allow_other, err, errlen);
  if (fd < 0) return -1;
  p->devfd = fd;
  p->mountpoint = strdup(mnt);
  find_dev(p, mnt);
  return 0;
}

/* Unmounts (lazily: readers with open files keep them until they close), then aborts the
 * connection where we can, so worker threads waiting for requests return. */
void unmount_fuse(plane *p) {
  if (!p->mountpoint) return;
  if (p->root_mount) umount2(p->mountpoint, MNT_DETACH);
  else {
    char *argv[] = { "fusermount3", "-u", "-z", "-q", "--", p->mountpoint, NULL };
    pid_t pid;
    if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) == 0)
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
  }
  if (p->dev_major == 0 && p->dev_minor) {
    char path[96];
    snprintf(path, sizeof path, "/sys/fs/fuse/connections/%u/abort", p->dev_minor);
    int a = open(path, O_WRONLY | O_CLOEXEC);
    if (a >= 0) { (void)!write(a, "1", 1); close(a); }
  }
  if (p->commfd >= 0) close(p->commfd);
  if (p->errfd >= 0) close(p->errfd);
  p->commfd = p->errfd = -1;
}
