/* ps_test_client — see ps_test_client.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "ps_test_client.h"

#include <string.h>

#include "harness.h"
#include "pageserver.pb-c.h"

int pc_unary(rpc_channel *ch, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *d, void *out)
{
    int rc = RPC_EUNAVAILABLE;
    for (int i = 0; i < 100 && rc == RPC_EUNAVAILABLE; i++) {
        rc = rpc_unary(ch, method, req, d, (ProtobufCMessage **)out, 10000, NULL);
        if (rc == RPC_EUNAVAILABLE) {
            h_sleep_ms(100);
        }
    }
    return rc;
}

void pc_create_tenant(rpc_channel *ch, uint8_t tenant_id[16])
{
    Arbor__CreateTenantRequest req = ARBOR__CREATE_TENANT_REQUEST__INIT;
    Arbor__CreateTenantResponse *resp;
    assert_int_equal(pc_unary(ch, "/arbor.Management/CreateTenant", &req.base,
                              &arbor__create_tenant_response__descriptor, &resp), 0);
    assert_null(resp->error);
    assert_int_equal(resp->tenant_id.len, 16);
    memcpy(tenant_id, resp->tenant_id.data, 16);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
}
