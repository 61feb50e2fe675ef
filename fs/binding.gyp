{
  "targets": [
    {
      "target_name": "desfs_fuse",
      "sources": ["native/binding.c", "native/plane.c", "native/nodes.c", "native/mount.c", "native/direct-write.c"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter", "-O2", "-pthread"],
      "ldflags": ["-pthread"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [
        ["OS!='linux'", { "sources!": ["native/binding.c", "native/plane.c", "native/nodes.c", "native/mount.c", "native/direct-write.c"] }]
      ]
    }
  ]
}
