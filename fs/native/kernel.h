/* The FUSE kernel protocol as desfs speaks it: Debian bookworm's <linux/fuse.h> (protocol 7.38) plus
 * the few later fields passthrough needs (protocol 7.40, kernel 6.9), written here from the kernel's
 * documentation (Documentation/filesystems/fuse-passthrough.rst and the uapi header's changelog),
 * because the build machine's headers predate them. Reply structures are sized by the minor version
 * we answer INIT with, so desfs answers with at most DESFS_FUSE_MINOR. */
#ifndef DESFS_KERNEL_H
#define DESFS_KERNEL_H

#include <linux/fuse.h>
#include <stdint.h>
#include <sys/ioctl.h>

#define DESFS_FUSE_MINOR 40

#ifndef FUSE_PASSTHROUGH
/* INIT flag (in flags2, as bit 37 of the 64-bit flag word): the server may open files in passthrough. */
#define FUSE_PASSTHROUGH (1ULL << 37)
#endif

#ifndef FOPEN_PASSTHROUGH
/* open_out.open_flags: reads and mmap of this open file go straight to the backing file. */
#define FOPEN_PASSTHROUGH (1 << 7)
#endif

/* fuse_init_out as of 7.40: max_stack_depth took the first unused word. */
struct desfs_init_out {
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
  uint16_t max_background;
  uint16_t congestion_threshold;
  uint32_t max_write;
  uint32_t time_gran;
  uint16_t max_pages;
  uint16_t map_alignment;
  uint32_t flags2;
  uint32_t max_stack_depth;
  uint32_t unused[6];
};

/* fuse_open_out as of 7.40: the padding word became the backing id. */
struct desfs_open_out {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};

/* The backing-file ioctls (7.40): open returns a backing id for an fd; close takes the id. */
struct desfs_backing_map {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
#ifndef FUSE_DEV_IOC_BACKING_OPEN
#define FUSE_DEV_IOC_BACKING_OPEN _IOW(FUSE_DEV_IOC_MAGIC, 1, struct desfs_backing_map)
#define FUSE_DEV_IOC_BACKING_CLOSE _IOW(FUSE_DEV_IOC_MAGIC, 2, uint32_t)
#endif

_Static_assert(sizeof(struct desfs_init_out) == 64, "fuse_init_out is 64 bytes");
_Static_assert(sizeof(struct desfs_open_out) == 16, "fuse_open_out is 16 bytes");
_Static_assert(sizeof(struct fuse_entry_out) == 128, "fuse_entry_out is 128 bytes");

#endif
