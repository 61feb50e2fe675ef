// Types for the parts of fuse-native (a CommonJS package without its own types) that desfs uses.
declare module 'fuse-native' {
  type Cb<T extends unknown[] = []> = (err: number, ...rest: T) => void
  export interface Stat {
    mode: number
    uid: number
    gid: number
    size: number
    mtime: Date | number
    atime: Date | number
    ctime: Date | number
    nlink?: number
    blksize?: number
    blocks?: number
    ino?: number
    dev?: number
    rdev?: number
  }
  export interface StatFs {
    bsize: number
    frsize: number
    blocks: number
    bfree: number
    bavail: number
    files: number
    ffree: number
    favail: number
    fsid: number
    flag: number
    namemax: number
  }
  export interface Ops {
    init?(cb: Cb): void
    access?(path: string, mode: number, cb: Cb): void
    statfs?(path: string, cb: Cb<[StatFs?]>): void
    getattr?(path: string, cb: Cb<[Stat?]>): void
    fgetattr?(path: string, fd: number, cb: Cb<[Stat?]>): void
    readdir?(path: string, cb: Cb<[string[]?, Stat[]?]>): void
    open?(path: string, flags: number, cb: Cb<[number?]>): void
    opendir?(path: string, flags: number, cb: Cb<[number?]>): void
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void
    release?(path: string, fd: number, cb: Cb): void
    releasedir?(path: string, fd: number, cb: Cb): void
    getxattr?(path: string, name: string, position: number, cb: Cb<[Buffer?]>): void
    listxattr?(path: string, cb: Cb<[string[]?]>): void
    setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Cb): void
    removexattr?(path: string, name: string, cb: Cb): void
    create?(path: string, mode: number, cb: Cb<[number?]>): void
    truncate?(path: string, size: number, cb: Cb): void
    ftruncate?(path: string, fd: number, size: number, cb: Cb): void
    unlink?(path: string, cb: Cb): void
    rename?(src: string, dest: string, cb: Cb): void
    link?(src: string, dest: string, cb: Cb): void
    symlink?(src: string, dest: string, cb: Cb): void
    mkdir?(path: string, mode: number, cb: Cb): void
    rmdir?(path: string, cb: Cb): void
    chmod?(path: string, mode: number, cb: Cb): void
    chown?(path: string, uid: number, gid: number, cb: Cb): void
    utimens?(path: string, atime: number, mtime: number, cb: Cb): void
    mknod?(path: string, mode: number, dev: number, cb: Cb): void
    readlink?(path: string, cb: Cb<[string?]>): void
    flush?(path: string, fd: number, cb: Cb): void
    fsync?(path: string, datasync: boolean, fd: number, cb: Cb): void
  }
  export interface FuseOptions {
    timeout?: number | false | Record<string, number | false>
    force?: boolean
    mkdir?: boolean
    debug?: boolean
    allowOther?: boolean
    allowRoot?: boolean
    autoUnmount?: boolean
    defaultPermissions?: boolean
    maxRead?: number
    fsname?: string
    subtype?: string
    kernelCache?: boolean
    autoCache?: boolean
    entryTimeout?: number
    attrTimeout?: number
    acAttrTimeout?: number
  }
  class Fuse {
    constructor(mnt: string, ops: Ops, opts?: FuseOptions)
    mount(cb: (err: Error | null) => void): void
    unmount(cb: (err: Error | null) => void): void
    static unmount(mnt: string, cb: (err: Error | null) => void): void
    static EPERM: number
    static ENOENT: number
    static EIO: number
    static EBADF: number
    static EACCES: number
    static EEXIST: number
    static ENOTDIR: number
    static EISDIR: number
    static EINVAL: number
    static EROFS: number
    static ENOSYS: number
    static ENODATA: number
    static ERANGE: number
    static ETIMEDOUT: number
    static ENOTSUP: number
    static EOPNOTSUPP: number
  }
  export default Fuse
}
