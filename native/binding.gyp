{
  "targets": [
    {
      "target_name": "usertgt_native",
      "sources": ["punch_hole.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
