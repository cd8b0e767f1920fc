# Every dependency comes from a Debian 12 package (tools/deps.sh installs them).
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)
# xxHash links statically where Debian ships the archive (position-independent
# in libxxhash-dev), so the GPU test binaries carry no library of ours beyond
# CUDA's (tools/gpu_bundle.sh).
find_library(XXHASH_STATIC_LIBRARY NAMES libxxhash.a HINTS ${XXHASH_LIBRARY_DIRS})
if(XXHASH_STATIC_LIBRARY)
  set_target_properties(PkgConfig::XXHASH PROPERTIES INTERFACE_LINK_LIBRARIES
                                                     "${XXHASH_STATIC_LIBRARY}")
endif()
pkg_check_modules(LIBURING REQUIRED IMPORTED_TARGET liburing)
pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)  # the cluster tier
pkg_check_modules(GRPCPP REQUIRED IMPORTED_TARGET grpc++)
# Server reflection (kvtierd answers grpcurl and other generic clients):
# libgrpc++-dev ships the library without a pkg-config file. The target takes
# upstream gRPC's CMake name.
find_library(GRPCPP_REFLECTION_LIBRARY grpc++_reflection REQUIRED HINTS ${GRPCPP_LIBRARY_DIRS})
add_library(gRPC::grpc++_reflection UNKNOWN IMPORTED)
set_target_properties(gRPC::grpc++_reflection PROPERTIES IMPORTED_LOCATION "${GRPCPP_REFLECTION_LIBRARY}"
                                                         INTERFACE_LINK_LIBRARIES PkgConfig::GRPCPP)
find_package(Protobuf REQUIRED)
find_program(GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(RocksDB REQUIRED)
# OpenSSL: HMAC-SHA256 for the secret cache salts (server/cache_secret.h).
find_package(OpenSSL REQUIRED)
# cpp-httplib serves the Prometheus /metrics endpoint. Debian ships it compiled
# (libcpp-httplib.so, built with OpenSSL, zlib and brotli) with a pkg-config
# file but no CMake config. The .pc's -DCPPHTTPLIB_*_SUPPORT flags must reach
# every file that includes httplib.h, or its classes' layout differs from the
# library's; the imported target carries them. The shared library links
# OpenSSL, zlib and brotli itself, so we need no link flags of our own.
pkg_check_modules(CPP_HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
if(KVTIER_BUILD_TESTS)
  # The reference tokenizer of the engine tests only (see tests/CMakeLists.txt).
  pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
endif()
if(KVTIER_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()
if(KVTIER_BUILD_BENCH)
  find_package(benchmark REQUIRED)
  # The engine benchmark's GEMM peer (the machine's measured FLOP/s); optional,
  # `tools/deps.sh --bench` installs it.
  pkg_check_modules(OPENBLAS IMPORTED_TARGET openblas)
  # Its bf16 peer on CPUs with AMX: oneDNN's matmul (Debian's libdnnl-dev,
  # built on OpenMP); optional, `tools/deps.sh --bench` installs it. Debian's
  # dnnl-config.cmake requires OpenCL (its GPU runtime), a hard error where
  # OpenCL's headers are missing: looked for first, quietly.
  find_package(OpenCL QUIET)
  if(OpenCL_FOUND)
    find_package(dnnl CONFIG QUIET)
  else()
    message(STATUS "No OpenCL headers (tools/deps.sh --bench): oneDNN not looked for, "
                   "engine_bench goes without its bf16 peer")
  endif()
  find_package(OpenMP QUIET COMPONENTS CXX)
endif()

# CUDA: AUTO enables it when nvcc is found, at /usr/local/cuda by default.
set(KVTIER_HAVE_CUDA OFF)
if(NOT KVTIER_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    if(NOT CMAKE_CUDA_ARCHITECTURES)
      # Hopper (H100/H200) SASS plus PTX that later GPUs can JIT.
      set(CMAKE_CUDA_ARCHITECTURES 90)
    endif()
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    # CMake 3.25 does not know nvcc's C++20 flag; .cu files and the headers
    # they include are kept to C++17.
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_STANDARD_REQUIRED ON)
    set(KVTIER_HAVE_CUDA ON)
  elseif(KVTIER_CUDA STREQUAL "ON")
    message(FATAL_ERROR "KVTIER_CUDA=ON but no CUDA compiler was found")
  endif()
endif()
message(STATUS "kvtier: CUDA kernels ${KVTIER_HAVE_CUDA}")
