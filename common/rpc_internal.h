/*
 * rpc_internal: what rpc_server.c and rpc_client.c share; not for use outside common/rpc*.c.
 */
#ifndef CALC_RPC_INTERNAL_H
#define CALC_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* The metadata key that carries the service token. */
#define RPC_TOKEN_KEY "x-calc-token"

/* A new byte buffer holding msg packed; the caller destroys it. */
grpc_byte_buffer *rpc__pack(const ProtobufCMessage *msg);
/* The message in bb (a new one: protobuf_c_message_free_unpacked), or NULL when it does not
 * decode. bb stays the caller's. */
ProtobufCMessage *rpc__unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

#endif
