# Safekeeper durable storage: control file and WAL segments (sk_control,
# sk_wal), with fault injection through the sk_io table; and the gRPC service
# over that table (acknowledged means fdatasync'ed).
arbor_test(test_sk_storage SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_sk_storage.c LIBS arbor_sk TIMEOUT 300)
# Power loss of the acceptor (tests/unit/pl_disk.c: unsynced writes and
# directory changes lost): SK_PL_SEEDS seeds of three cuts each.
arbor_test(test_sk_powerloss SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_sk_powerloss.c
           ${CMAKE_CURRENT_SOURCE_DIR}/unit/pl_disk.c LIBS arbor_sk TIMEOUT 300)
