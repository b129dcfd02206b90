#ifndef HERALD_CRDKAFKA_SHIM_H
#define HERALD_CRDKAFKA_SHIM_H

#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/// rd_kafka_producev is variadic and cannot be called from Swift.
/// Copies key and value (RD_KAFKA_MSG_F_COPY), so the caller's buffers may be
/// released as soon as this returns. `key` may be NULL (no key); `partition`
/// RD_KAFKA_PARTITION_UA lets the partitioner choose.
static inline rd_kafka_resp_err_t herald_produce(rd_kafka_t *rk,
                                                 const char *topic,
                                                 int32_t partition,
                                                 const void *key,
                                                 size_t key_len,
                                                 const void *value,
                                                 size_t value_len) {
        return rd_kafka_producev(
            rk,
            RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_PARTITION(partition),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY((void *)key, key_len),
            RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_END);
}

/// Swift imports RD_KAFKA_PARTITION_UA and the logical offsets poorly
/// (macros with casts); expose them as constants.
static inline int32_t herald_partition_unassigned(void) { return RD_KAFKA_PARTITION_UA; }
static inline int64_t herald_offset_invalid(void) { return RD_KAFKA_OFFSET_INVALID; }

#endif
