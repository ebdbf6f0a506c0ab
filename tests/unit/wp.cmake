# Walproposer (safekeeper/wp_*): the network-free decisions — quorum commit,
# donor choice, histories, the record buffer.
arbor_test(test_wp_logic SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_wp_logic.c
           LIBS arbor_walproposer)
