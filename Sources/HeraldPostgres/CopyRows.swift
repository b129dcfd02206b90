/// Rows for ``PostgresConnection/copyFrom(_:_:)``, encoded in COPY text format as they are
/// appended and sent to the server whenever about 256 KiB have accumulated.
///
/// Appending never throws: a send failure (or a value with a NUL character) is remembered,
/// later rows are dropped, and `copyFrom` aborts the COPY and throws it after the closure returns.
/// A `CopyRows` is only usable inside its `copyFrom` closure.
public struct CopyRows {
    /// Flush threshold.
    static let chunkSize = 256 * 1024

    private let sink: CopySink
    private var buffer: [UInt8] = []
    /// Rows appended so far.
    public private(set) var count = 0

    init(sink: CopySink) {
        self.sink = sink
        buffer.reserveCapacity(Self.chunkSize + 4096)
    }

    /// Appends one row; nil values are SQL NULL (`\N`).
    public mutating func append(_ row: [String?]) {
        guard sink.isOpen, sink.failure == nil else { return }
        for (index, value) in row.enumerated() {
            if index > 0 { buffer.append(0x09) }
            guard let value else {
                buffer.append(0x5C)  // \N
                buffer.append(0x4E)
                continue
            }
            for byte in value.utf8 {
                switch byte {
                case 0x5C: buffer.append(0x5C); buffer.append(0x5C)  // \\ 
                case 0x09: buffer.append(0x5C); buffer.append(0x74)  // \t
                case 0x0A: buffer.append(0x5C); buffer.append(0x6E)  // \n
                case 0x0D: buffer.append(0x5C); buffer.append(0x72)  // \r
                case 0x00:
                    sink.failure = PostgresError(
                        sqlState: "22021",
                        message: "COPY row \(count + 1) contains a NUL character, which PostgreSQL text cannot hold"
                    )
                    buffer.removeAll()
                    return
                default: buffer.append(byte)
                }
            }
        }
        buffer.append(0x0A)
        count += 1
        if buffer.count >= Self.chunkSize { flush() }
    }

    /// Sends what is buffered (called by `copyFrom` at the end).
    mutating func flush() {
        guard !buffer.isEmpty, sink.isOpen, sink.failure == nil else {
            buffer.removeAll(keepingCapacity: true)
            return
        }
        sink.send(buffer)
        buffer.removeAll(keepingCapacity: true)
    }
}

/// The connection side of a `CopyRows`; closed when `copyFrom` returns so an escaped copy is inert.
final class CopySink {
    private var connection: PostgresConnection?
    var failure: PostgresError?

    init(connection: PostgresConnection) {
        self.connection = connection
    }

    var isOpen: Bool { connection != nil }

    func send(_ bytes: [UInt8]) {
        guard let connection, failure == nil else { return }
        failure = connection.putCopyData(bytes)
    }

    func close() {
        connection = nil
    }
}
