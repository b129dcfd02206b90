internal import CRdKafka

/// An error reported by librdkafka or by this wrapper.
/// `code` is librdkafka's `rd_kafka_resp_err_t`: negative codes are client-local
/// (e.g. -185 `_TIMED_OUT`), positive ones are Kafka protocol errors.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    public var code: Int32
    public var name: String
    public var message: String
    public var isFatal: Bool
    public var isRetriable: Bool

    public init(code: Int32, name: String, message: String, isFatal: Bool = false, isRetriable: Bool = false) {
        self.code = code
        self.name = name
        self.message = message
        self.isFatal = isFatal
        self.isRetriable = isRetriable
    }

    public var description: String { "KafkaError \(name) (\(code)): \(message)" }

    /// A local timeout (flush, poll, request) or a message that timed out before delivery.
    public var isTimeout: Bool {
        code == RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue
            || code == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue
            || code == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT.rawValue
    }
}

extension KafkaError {
    /// From a plain response code; `context` says what was being done.
    init(_ err: rd_kafka_resp_err_t, _ context: String) {
        let name = String(cString: rd_kafka_err2name(err))
        let text = String(cString: rd_kafka_err2str(err))
        self.init(
            code: err.rawValue,
            name: name,
            message: "\(context): \(text)",
            isFatal: err == RD_KAFKA_RESP_ERR__FATAL,
            isRetriable: Self.retriableCodes.contains(err.rawValue)
        )
    }

    /// From an `rd_kafka_error_t`, which it destroys.
    init(consuming error: OpaquePointer, _ context: String) {
        defer { rd_kafka_error_destroy(error) }
        self.init(
            code: rd_kafka_error_code(error).rawValue,
            name: String(cString: rd_kafka_error_name(error)),
            message: "\(context): \(String(cString: rd_kafka_error_string(error)))",
            isFatal: rd_kafka_error_is_fatal(error) != 0,
            isRetriable: rd_kafka_error_is_retriable(error) != 0
        )
    }

    /// The client's fatal error (after an `_FATAL` report), if any.
    static func fatal(of handle: OpaquePointer) -> KafkaError? {
        var buffer = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(handle, &buffer, buffer.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        let reason = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var error = KafkaError(err, "fatal error")
        error.message = "fatal error: \(reason)"
        error.isFatal = true
        error.isRetriable = false
        return error
    }

    static func local(_ err: rd_kafka_resp_err_t, _ message: String) -> KafkaError {
        KafkaError(
            code: err.rawValue,
            name: String(cString: rd_kafka_err2name(err)),
            message: message,
            isFatal: false,
            isRetriable: retriableCodes.contains(err.rawValue)
        )
    }

    private static let retriableCodes: Set<Int32> = [
        RD_KAFKA_RESP_ERR__TIMED_OUT.rawValue,
        RD_KAFKA_RESP_ERR__MSG_TIMED_OUT.rawValue,
        RD_KAFKA_RESP_ERR__TRANSPORT.rawValue,
        RD_KAFKA_RESP_ERR__QUEUE_FULL.rawValue,
        RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN.rawValue,
        RD_KAFKA_RESP_ERR__WAIT_COORD.rawValue,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT.rawValue,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION.rawValue,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE.rawValue,
        RD_KAFKA_RESP_ERR_NOT_COORDINATOR.rawValue,
        RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE.rawValue,
        RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS.rawValue,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS.rawValue,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND.rawValue,
        RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS.rawValue,
        RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION.rawValue,
    ]
}
