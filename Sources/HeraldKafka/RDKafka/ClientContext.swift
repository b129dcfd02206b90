internal import CRdKafka
import Logging
import Synchronization

/// State that librdkafka's callbacks reach through the opaque pointer
/// (`rd_kafka_conf_set_opaque` with `Unmanaged.passUnretained`). The owning
/// `RDClient` keeps it alive strictly longer than the `rd_kafka_t`, so the
/// unretained pointer never dangles.
// Safe: `logger` and `onRebalance` are immutable lets; the mutable error slots
// are behind Mutexes. `onRebalance` is only invoked from the rebalance callback,
// which librdkafka runs on the thread calling consumer poll/close — the
// consumer's single owning thread (KafkaConsumer is not Sendable).
final class ClientContext: @unchecked Sendable {
    let logger: Logger
    let onRebalance: ((RebalanceEvent) -> [TopicPartition: Int64])?
    /// Values of sensitive settings; scrubbed from every librdkafka text we log
    /// or throw (its CONFWARN lines, for one, quote configured values).
    private let secrets: [String]
    private let deliveryError = Mutex<KafkaError?>(nil)
    private let fatalError = Mutex<KafkaError?>(nil)
    private let deliveryFailures = Atomic<Int>(0)

    init(
        logger: Logger,
        secrets: [String] = [],
        onRebalance: ((RebalanceEvent) -> [TopicPartition: Int64])? = nil
    ) {
        self.logger = logger
        self.onRebalance = onRebalance
        // Longest first, so a secret containing another is removed whole.
        self.secrets = secrets.sorted { $0.count > $1.count }
    }

    func scrub(_ text: String) -> String {
        var text = text
        for secret in secrets where text.contains(secret) {
            text = text.replacing(secret, with: RDClient.redacted)
        }
        return text
    }

    var opaque: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func from(_ opaque: UnsafeMutableRawPointer?) -> ClientContext? {
        guard let opaque else { return nil }
        return Unmanaged<ClientContext>.fromOpaque(opaque).takeUnretainedValue()
    }

    /// Keeps the first delivery error since the last `takeDeliveryError`.
    /// Returns true when it is the first one (worth logging loudly).
    func recordDeliveryError(_ error: KafkaError) -> Bool {
        deliveryFailures.add(1, ordering: .relaxed)
        return deliveryError.withLock { slot in
            guard slot == nil else { return false }
            slot = error
            return true
        }
    }

    /// The first delivery error since the previous call, and how many failed in all.
    func takeDeliveryError() -> (KafkaError, failures: Int)? {
        let error = deliveryError.withLock { slot -> KafkaError? in
            defer { slot = nil }
            return slot
        }
        let failures = deliveryFailures.exchange(0, ordering: .relaxed)
        guard let error else { return nil }
        return (error, failures)
    }

    func recordFatal(_ error: KafkaError) {
        fatalError.withLock { slot in
            if slot == nil { slot = error }
        }
    }

    var fatal: KafkaError? { fatalError.withLock { $0 } }
}
