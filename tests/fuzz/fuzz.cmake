# libFuzzer targets; included by tests/CMakeLists.txt only with -DARBOR_FUZZ=ON.
# Run them with scripts/fuzz.sh. The seed corpus is also replayed in every
# build by test_fuzz_wal_corpus (tests/unit/wal.cmake).
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "ARBOR_FUZZ=ON needs clang: configure with CC=clang")
endif()

set(ARBOR_FUZZ_FLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)

# The codec's sources are compiled into the fuzzer itself rather than linked
# from arbor_wal, so they get libFuzzer's coverage instrumentation without
# changing how arbor_wal is built. The list follows arbor_wal's own.
get_target_property(_wal_srcs arbor_wal SOURCES)
get_target_property(_wal_dir arbor_wal SOURCE_DIR)
list(TRANSFORM _wal_srcs PREPEND ${_wal_dir}/)

add_executable(fuzz_wal ${CMAKE_CURRENT_LIST_DIR}/fuzz_wal.c ${_wal_srcs})
target_include_directories(fuzz_wal PRIVATE ${_wal_dir})
# -UNDEBUG: keep the codec's asserts live whatever the build type.
target_compile_options(fuzz_wal PRIVATE ${ARBOR_FUZZ_FLAGS} -UNDEBUG)
target_link_options(fuzz_wal PRIVATE ${ARBOR_FUZZ_FLAGS})
target_link_libraries(fuzz_wal PRIVATE PkgConfig::XXHASH PkgConfig::LZ4)
