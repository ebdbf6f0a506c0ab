/*
 * ps_test_client — gRPC calls to a pageserver that the end-to-end tests
 * share (prefix pc_): test_pageserver and test_vfs_common (the VFS tests,
 * test_compute). cmocka assertions; single-threaded use per channel as
 * rpc.h allows.
 */
#ifndef ARBOR_TEST_PS_CLIENT_H
#define ARBOR_TEST_PS_CLIENT_H

#include <stdint.h>

#include "rpc.h"

/* rpc_unary on ch (10 s per try), tried again every 100 ms, up to 100
 * times, while it returns RPC_EUNAVAILABLE: a restarted server, whose
 * first call may meet the dead connection. out: the response, as from
 * rpc_unary (free with protobuf_c_message_free_unpacked). Its last code. */
int pc_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *d, void *out);

/* CreateTenant on ch; fails the test on any error. The new id into
 * tenant_id. */
void pc_create_tenant(rpc_channel *ch, uint8_t tenant_id[16]);

#endif
