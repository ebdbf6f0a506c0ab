# LSNs and the WAL record codec (common/lsn.c, common/wal_record.c).
arbor_test(test_lsn SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_lsn.c LIBS arbor_wal)
# test_wal builds and damages records by hand, so it hashes and compresses
# itself rather than trusting the codec under test.
arbor_test(test_wal SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_wal.c
           LIBS arbor_wal PkgConfig::XXHASH PkgConfig::LZ4 TIMEOUT 600)
# Replays the fuzz seed corpus through the fuzz target's entry point, so
# every build checks the inputs the fuzzer starts from (and any crashers
# added to the corpus) without needing clang or libFuzzer.
arbor_test(test_fuzz_wal_corpus
           SOURCES ${PROJECT_SOURCE_DIR}/tests/fuzz/fuzz_wal.c
                   ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.c
           LIBS arbor_wal
           ARGS ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus/wal)
