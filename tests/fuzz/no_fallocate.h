// Included by exactly one file of a fuzz target that opens RocksDB stores:
// RocksDB preallocates every WAL and MANIFEST it creates (about 70 MiB) with
// fallocate and truncates it on close, which on tmpfs zeroes and frees those
// pages and was most of each input's time. RocksDB treats preallocation as
// best effort, so refusing it changes nothing the target checks.
#pragma once

#include <fcntl.h>

#include <cerrno>

extern "C" int fallocate(int, int, off_t, off_t) {
  errno = EOPNOTSUPP;
  return -1;
}
extern "C" int fallocate64(int, int, off_t, off_t) {
  errno = EOPNOTSUPP;
  return -1;
}
