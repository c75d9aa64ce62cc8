{
  "variables": {
    "have_liburing%": "<!(test -e /usr/include/liburing.h && echo 1 || echo 0)",
    "has_librbd%": "<!(test -f /usr/include/rbd/librbd.h && test -f /usr/include/rados/librados.h && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "usertgt_native",
      "sources": ["addon.c", "errno_name.c", "range_ops.c", "block_device.c", "uring_engine.c", "malloc_trim.c", "aligned_buffer.c", "cpu_affinity.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "conditions": [
        [
          "have_liburing==1",
          {
            "defines": ["USERTGT_HAVE_LIBURING"],
            "libraries": ["-luring"]
          }
        ]
      ]
    },
    {
      "target_name": "usertgt_sd_notify",
      "sources": ["sd_notify.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "usertgt_rbd",
      "conditions": [
        [
          "has_librbd==1",
          {
            "sources": ["rbd.c"],
            "cflags": ["-Wall", "-Wextra", "-O2"],
            "libraries": ["-lrbd", "-lrados"]
          },
          { "type": "none" }
        ]
      ]
    }
  ]
}
