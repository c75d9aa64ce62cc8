{
  "targets": [
    {
      "target_name": "usertgt_native",
      "sources": ["punch_hole.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    },
    {
      "target_name": "usertgt_sd_notify",
      "sources": ["sd_notify.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
