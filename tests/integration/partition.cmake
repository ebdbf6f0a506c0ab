# Network partitions between the real daemons under bank transfers
# (tests/partition): the test runs in a network namespace of its own, each
# daemon in a cgroup of its own, nftables rules cut chosen pairs (also one
# way, and flapping). Exit 77 (skipped) without netns, nftables or cgroup v2.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  arbor_integration_test(test_partition TIMEOUT 240 SKIP_RETURN_CODE 77
    COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/partition/partition_test.py
            --arbor $<TARGET_FILE:arbor>)
endif()
