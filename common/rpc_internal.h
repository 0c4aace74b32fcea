/*
 * rpc_internal: what rpc_server.c and rpc_client.c share; not for use outside common/rpc*.c.
 */
#ifndef CALC_RPC_INTERNAL_H
#define CALC_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/*
 * A tag handed to gRPC on one thread comes back from a completion queue on another. gRPC orders
 * the two with its own atomics, which ThreadSanitizer cannot see in the uninstrumented library:
 * release a tag's memory before handing it over and acquire it when it comes back, so a
 * ThreadSanitizer build knows what gRPC guarantees. Nothing in other builds.
 */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RPC_TSAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RPC_TSAN 1
#endif
#ifdef RPC_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define rpc__tag_release(tag) __tsan_release(tag)
#define rpc__tag_acquire(tag) __tsan_acquire(tag)
#else
#define rpc__tag_release(tag) ((void)(tag))
#define rpc__tag_acquire(tag) ((void)(tag))
#endif

/* The metadata key that carries the service token. */
#define RPC_TOKEN_KEY "x-calc-token"

/* A new byte buffer holding msg packed; the caller destroys it. */
grpc_byte_buffer *rpc__pack(const ProtobufCMessage *msg);
/* The message in bb (a new one: protobuf_c_message_free_unpacked), or NULL when it does not
 * decode. bb stays the caller's. */
ProtobufCMessage *rpc__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

#endif
