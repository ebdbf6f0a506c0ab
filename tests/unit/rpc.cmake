# The RPC layer over the gRPC C core (common/rpc.c): real servers and
# channels on 127.0.0.1 with ephemeral ports, so no fixed port can clash.
arbor_test(test_rpc SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_rpc.c
           LIBS arbor_rpc TIMEOUT 180)
