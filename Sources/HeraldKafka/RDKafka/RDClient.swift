internal import CRdKafka
import Logging

/// Owns one `rd_kafka_t`; destroys it in `deinit`.
final class RDClient {
    enum Kind {
        case producer
        case consumer

        var rdType: rd_kafka_type_t {
            switch self {
            case .producer: RD_KAFKA_PRODUCER
            case .consumer: RD_KAFKA_CONSUMER
            }
        }
    }

    /// `rd_kafka_t *`; never handed out of the module.
    let handle: OpaquePointer
    /// Must outlive `handle`: it is released only after `deinit` has destroyed it.
    let context: ClientContext

    /// - Parameter settings: applied in order, so later entries override earlier ones.
    init(
        kind: Kind,
        settings: [(key: String, value: String)],
        logger: Logger,
        onRebalance: ((RebalanceEvent) -> [TopicPartition: Int64])? = nil
    ) throws {
        let context = ClientContext(logger: logger, secrets: Self.secrets(in: settings), onRebalance: onRebalance)
        let conf = rd_kafka_conf_new()!
        do {
            for (key, value) in settings {
                try Self.set(conf, key, value)
            }
        } catch {
            rd_kafka_conf_destroy(conf)
            throw error
        }
        rd_kafka_conf_set_opaque(conf, context.opaque)
        rd_kafka_conf_set_log_cb(conf, rdLogCallback)
        rd_kafka_conf_set_error_cb(conf, rdErrorCallback)
        if kind == .producer {
            rd_kafka_conf_set_dr_msg_cb(conf, rdDeliveryCallback)
        }
        if kind == .consumer {
            rd_kafka_conf_set_rebalance_cb(conf, rdRebalanceCallback)
        }

        context.logger.debug(
            "creating librdkafka client",
            metadata: ["kafka.config": .string(Self.describe(settings))]
        )
        var errstr = [CChar](repeating: 0, count: 512)
        guard let handle = rd_kafka_new(kind.rdType, conf, &errstr, errstr.count) else {
            // On failure the configuration is still ours.
            rd_kafka_conf_destroy(conf)
            let reason = errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw KafkaError.local(RD_KAFKA_RESP_ERR__INVALID_ARG, "cannot create Kafka client: \(reason)")
        }
        self.handle = handle
        self.context = context
    }

    deinit {
        rd_kafka_destroy(handle)
    }

    var name: String { String(cString: rd_kafka_name(handle)) }

    private static func set(_ conf: OpaquePointer, _ key: String, _ value: String) throws {
        var errstr = [CChar](repeating: 0, count: 512)
        let result = rd_kafka_conf_set(conf, key, value, &errstr, errstr.count)
        guard result != RD_KAFKA_CONF_OK else { return }
        let code = result == RD_KAFKA_CONF_UNKNOWN ? "unknown" : "invalid"
        // librdkafka's message may quote the value; do not echo secrets.
        let reason = isSensitive(key)
            ? "\(code) value for configuration property \"\(key)\" (\(redacted))"
            : errstr.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        throw KafkaError.local(RD_KAFKA_RESP_ERR__INVALID_ARG, "configuration \(key): \(reason)")
    }

    static let redacted = "<redacted>"

    /// Values worth scrubbing from log text: those of sensitive keys, except
    /// plain numbers and booleans, which are no secrets and would over-redact.
    static func secrets(in settings: [(key: String, value: String)]) -> [String] {
        let values = settings.filter { isSensitive($0.key) }.map(\.value).filter { value in
            !value.isEmpty && Int(value) == nil && !["true", "false"].contains(value.lowercased())
        }
        return Array(Set(values))
    }

    /// Keys whose values must never be logged.
    static func isSensitive(_ key: String) -> Bool {
        let key = key.lowercased()
        return key.contains("password") || key.contains("secret") || key.contains("sasl")
            || key.contains("ssl.key")
    }

    /// "key=value, …" with sensitive values redacted; later duplicates win.
    static func describe(_ settings: [(key: String, value: String)]) -> String {
        var effective: [String: String] = [:]
        for (key, value) in settings { effective[key] = value }
        return effective.keys.sorted().map { key in
            "\(key)=\(isSensitive(key) ? redacted : effective[key]!)"
        }.joined(separator: ", ")
    }

    /// Herald's defaults, then `bootstrap.servers`, then the caller's overrides (sorted for determinism).
    static func settings(
        defaults: [(key: String, value: String)],
        config: KafkaClientConfig
    ) -> [(key: String, value: String)] {
        var settings = defaults
        settings.append(("bootstrap.servers", config.brokers))
        for key in config.properties.keys.sorted() {
            settings.append((key, config.properties[key]!))
        }
        return settings
    }
}

// MARK: - C callbacks (no captures; context comes through the opaque pointer)

private let rdLogCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Void = {
    handle, level, facility, text in
    guard let handle, let context = ClientContext.from(rd_kafka_opaque(handle)) else { return }
    let swiftLevel: Logger.Level =
        switch level {
        case ...2: .critical
        case 3: .error
        case 4: .warning
        case 5: .notice
        case 6: .info
        default: .debug
        }
    context.logger.log(
        level: swiftLevel,
        "\(context.scrub(text.map { String(cString: $0) } ?? ""))",
        metadata: [
            "rdkafka.facility": .string(facility.map { String(cString: $0) } ?? ""),
            "rdkafka.client": .string(String(cString: rd_kafka_name(handle))),
        ]
    )
}

private let rdErrorCallback: @convention(c) (OpaquePointer?, Int32, UnsafePointer<CChar>?, UnsafeMutableRawPointer?) -> Void = {
    handle, code, reason, opaque in
    guard let handle, let context = ClientContext.from(opaque) else { return }
    let err = rd_kafka_resp_err_t(rawValue: code)
    let reasonText = context.scrub(reason.map { String(cString: $0) } ?? "")
    if err == RD_KAFKA_RESP_ERR__FATAL {
        var fatal = KafkaError.fatal(of: handle) ?? KafkaError(err, reasonText)
        fatal.message = context.scrub(fatal.message)
        context.recordFatal(fatal)
        context.logger.critical("librdkafka fatal error", metadata: ["error": .string(fatal.description)])
        return
    }
    // Transport-level trouble is routine (broker restarts); librdkafka retries on its own.
    let level: Logger.Level =
        (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN
            || err == RD_KAFKA_RESP_ERR__RESOLVE) ? .warning : .error
    context.logger.log(
        level: level,
        "librdkafka error",
        metadata: [
            "error": .string(String(cString: rd_kafka_err2name(err))),
            "reason": .string(reasonText),
        ]
    )
}

private let rdDeliveryCallback: @convention(c) (OpaquePointer?, UnsafePointer<rd_kafka_message_t>?, UnsafeMutableRawPointer?) -> Void = {
    _, message, opaque in
    guard let message, let context = ClientContext.from(opaque) else { return }
    let err = message.pointee.err
    guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return }
    let topic = message.pointee.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? "?"
    let error = KafkaError(err, "delivery to \(topic)[\(message.pointee.partition)] failed")
    let first = context.recordDeliveryError(error)
    context.logger.log(
        level: first ? .error : .debug,
        "message delivery failed",
        metadata: [
            "kafka.topic": .string(topic),
            "kafka.partition": .stringConvertible(message.pointee.partition),
            "error": .string(error.description),
        ]
    )
}

private let rdRebalanceCallback: @convention(c) (OpaquePointer?, rd_kafka_resp_err_t, UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?, UnsafeMutableRawPointer?) -> Void = {
    handle, err, partitions, opaque in
    guard let handle, let context = ClientContext.from(opaque) else { return }
    Rebalance.handle(handle: handle, err: err, partitions: partitions, context: context)
}
