# Replays each fuzz target's seed corpus (tests/fuzz/corpus/<name>, plus
# any crasher saved there) through its entry point with replay_main.c, in
# every build (normal and ASan), without clang or libFuzzer. fuzz_wal's
# replay is test_fuzz_wal_corpus in wal.cmake.
include(${PROJECT_SOURCE_DIR}/tests/fuzz/targets.cmake)
foreach(t ${ARBOR_FUZZ_TARGETS})
  arbor_test(test_fuzz_${t}_corpus
             SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_${t}.c
                     ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.c
             LIBS ${ARBOR_FUZZ_LIBS_${t}}
             ARGS ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/${t})
  target_include_directories(test_fuzz_${t}_corpus PRIVATE ${PROJECT_SOURCE_DIR}/tests/fuzz)
  target_compile_options(test_fuzz_${t}_corpus PRIVATE -UNDEBUG)
endforeach()
