import HeraldCore
import HeraldKafka

extension DeadLetter {
    /// A dead letter for a consumed message, received now (and counted on /metrics).
    init(stage: String, reason: String, detail: String, message m: KafkaMessage) {
        HeraldMetrics.deadLettered(reason)
        self.init(stage: stage, reason: reason, detail: detail, sourceTopic: m.topic, sourcePartition: m.partition,
                  sourceOffset: m.offset, payload: m.value, receivedAt: .now)
    }
}
