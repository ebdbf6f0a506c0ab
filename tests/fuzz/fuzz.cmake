# libFuzzer targets; included by tests/CMakeLists.txt only with -DARBOR_FUZZ=ON.
# Run them with scripts/fuzz.sh. The seed corpora are also replayed in every
# build by test_fuzz_wal_corpus (tests/unit/wal.cmake) and
# test_fuzz_<name>_corpus (tests/unit/fuzz.cmake).
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

# The other targets link Arbor's libraries; those are compiled in this
# build with libFuzzer's coverage instrumentation (ARBOR_FUZZ implies
# ARBOR_SANITIZE, so ASan/UBSan are on everywhere; scripts/fuzz.sh builds
# only the fuzz_* targets in its own build dir).
set(ARBOR_FUZZ_LIB_FLAGS -fsanitize=fuzzer-no-link)
foreach(lib arbor_base arbor_wal arbor_rpc arbor_proto arbor_ps arbor_sk arbor_pgw
            arbor_sqltext arbor_sqh arbor_remote arbor_clients arbor_http_client arbor_proxy
            arbor_b64)
  if(TARGET ${lib})
    target_compile_options(${lib} PRIVATE ${ARBOR_FUZZ_LIB_FLAGS})
  endif()
endforeach()

# arbor_fuzz_target(NAME SOURCES ... LIBS ...): one libFuzzer binary.
function(arbor_fuzz_target name)
  cmake_parse_arguments(F "" "" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${F_SOURCES})
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_options(${name} PRIVATE ${ARBOR_FUZZ_FLAGS} -UNDEBUG)
  target_link_options(${name} PRIVATE ${ARBOR_FUZZ_FLAGS})
  target_link_libraries(${name} PRIVATE ${F_LIBS})
endfunction()

include(${CMAKE_CURRENT_LIST_DIR}/targets.cmake)
foreach(t ${ARBOR_FUZZ_TARGETS})
  arbor_fuzz_target(fuzz_${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/fuzz_${t}.c
                    LIBS ${ARBOR_FUZZ_LIBS_${t}})
endforeach()
