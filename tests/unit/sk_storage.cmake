# Safekeeper durable storage: control file and WAL segments (sk_control,
# sk_wal), with fault injection through the sk_io table; and the gRPC service
# over that table (acknowledged means fdatasync'ed).
arbor_test(test_sk_storage SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/unit/test_sk_storage.c LIBS arbor_sk TIMEOUT 300)
