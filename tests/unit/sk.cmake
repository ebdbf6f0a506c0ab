# Safekeeper acceptor logic (pure parts).
arbor_test(test_sk_history SOURCES unit/test_sk_history.c
           ${PROJECT_SOURCE_DIR}/safekeeper/sk_history.c
           LIBS arbor_wal)
target_include_directories(test_sk_history PRIVATE ${PROJECT_SOURCE_DIR}/safekeeper)
