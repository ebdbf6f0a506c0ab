/*
 * fuzz_grpc_msgs — libFuzzer target for the request message of every gRPC
 * method the pageserver (PageService, Management) and the safekeeper
 * (Safekeeper) serve: the protobuf-c unpack each handler runs on the bytes
 * a client sent (proto/pageserver.proto, safekeeper.proto; rpc.c hands the handler the raw message).
 * The methods are taken from the generated service descriptors, so a new
 * method is fuzzed without touching this file.
 *
 * The first input byte picks the method (mod the number of methods); the
 * rest is the message. Properties, abort() on a violation: unpack never
 * crashes or reads out of bounds; an accepted message passes
 * protobuf_c_message_check and packs to exactly get_packed_size bytes.
 *
 * Not covered here: the handlers' own checks after unpack (ids of 16
 * bytes, LSN ranges, ...) need an rpc_stream, i.e. a gRPC server; see
 * tests/README.md.
 */
#include "fuzz_common.h"
#include "pageserver.pb-c.h"
#include "safekeeper.pb-c.h"

static const ProtobufCServiceDescriptor *const services[] = {
    &arbor__page_service__descriptor,
    &arbor__management__descriptor,
    &arbor__safekeeper__descriptor,
};

static const ProtobufCMessageDescriptor *pick(unsigned k)
{
    unsigned total = 0;
    for (size_t s = 0; s < sizeof services / sizeof services[0]; s++)
        total += services[s]->n_methods;
    k %= total;
    for (size_t s = 0;; s++) {
        if (k < services[s]->n_methods)
            return services[s]->methods[k].input;
        k -= services[s]->n_methods;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = pick(data[0]);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
    if (m == NULL)
        return 0;
    CHECK(protobuf_c_message_check(m));
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *a = malloc(n + 1);
    CHECK(a != NULL);
    CHECK(protobuf_c_message_pack(m, a) == n);
    /* protobuf-c writes back what it read, unknown fields included, in a
     * form its own parser may refuse (field number 0 behind a non-minimal
     * varint key, in nested messages too: found by this target, kept in
     * the corpus as regress_*). Arbor's servers only unpack requests, so
     * that asymmetry is harmless; the round trip is checked only when the
     * packed bytes parse again. */
    ProtobufCMessage *again = protobuf_c_message_unpack(d, NULL, n, a);
    if (again != NULL) {
        size_t n2 = protobuf_c_message_get_packed_size(again);
        uint8_t *c = malloc(n2 + 1);
        CHECK(c != NULL);
        CHECK(protobuf_c_message_pack(again, c) == n2);
        free(c);
        protobuf_c_message_free_unpacked(again, NULL);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free(a);
    return 0;
}
