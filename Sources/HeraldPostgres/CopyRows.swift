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

    /// Fields written so far in the row being built with `field`/`arrayField`/`asciiField`.
    private var fieldsInRow = 0

    /// Appends one row; nil values are SQL NULL (`\N`).
    public mutating func append(_ row: [String?]) {
        for value in row { field(value) }
        endRow()
    }

    /// Whether appending still does anything (not after a failure or outside `copyFrom`).
    private var isWriting: Bool { sink.isOpen && sink.failure == nil }

    private mutating func separate() {
        if fieldsInRow > 0 { buffer.append(0x09) }
        fieldsInRow += 1
    }

    /// Appends one field of the current row: text, or SQL NULL (`\N`) for nil. A row is
    /// written field by field and finished with `endRow()`.
    public mutating func field(_ value: String?) {
        guard isWriting else { return }
        separate()
        guard let value else {
            buffer.append(0x5C)  // \N
            buffer.append(0x4E)
            return
        }
        appendText(value, arrayQuote: false)
    }

    /// A value's bytes, escaped for COPY text (and first for a `text[]` element when
    /// `arrayQuote`). Most values need no escaping: then one copy of their bytes. The value
    /// is only read (no copy of the string, which would retain and release it).
    private mutating func appendText(_ value: String, arrayQuote: Bool) {
        let copied: Bool? = value.utf8.withContiguousStorageIfAvailable { bytes in
            for b in bytes where b == 0x5C || b < 0x20 || (arrayQuote && b == 0x22) { return false }
            buffer.append(contentsOf: bytes)
            return true
        }
        if copied == true { return }
        for b in value.utf8 { appendEscaped(b, arrayQuote: arrayQuote) }
    }

    /// Appends one `text[]` field: the array input literal with every element double-quoted
    /// (`"` and `\` escaped inside it), as the field's text.
    public mutating func arrayField(_ values: [String]) {
        guard isWriting else { return }
        separate()
        buffer.append(UInt8(ascii: "{"))
        for i in values.indices {
            if i > 0 { buffer.append(UInt8(ascii: ",")) }
            buffer.append(UInt8(ascii: "\""))
            appendText(values[i], arrayQuote: true)
            buffer.append(UInt8(ascii: "\""))
        }
        buffer.append(UInt8(ascii: "}"))
    }

    /// Appends one field whose text `write` appends to the buffer: for values the caller
    /// formats itself, such as numbers and timestamps. The text must need no escaping (no
    /// backslash, no control character); if it does, the COPY fails instead.
    public mutating func asciiField(_ write: (inout [UInt8]) -> Void) {
        guard isWriting else { return }
        separate()
        let start = buffer.count
        write(&buffer)
        for b in buffer[start...] where b == 0x5C || b < 0x20 {
            fail(message: "COPY row \(count + 1) has a field that needs escaping where none was expected")
            return
        }
    }

    /// Ends the current row.
    public mutating func endRow() {
        guard isWriting else { return }
        buffer.append(0x0A)
        fieldsInRow = 0
        count += 1
        if buffer.count >= Self.chunkSize { flush() }
    }

    /// One byte of a field, escaped for COPY text (and, inside an array element, for the array
    /// literal first).
    private mutating func appendEscaped(_ byte: UInt8, arrayQuote: Bool) {
        switch byte {
        case 0x22 where arrayQuote: buffer.append(0x5C); buffer.append(0x5C); buffer.append(0x22)  // \"
        case 0x5C where arrayQuote:  // \\ in the literal, each escaped for COPY
            buffer.append(0x5C); buffer.append(0x5C); buffer.append(0x5C); buffer.append(0x5C)
        case 0x5C: buffer.append(0x5C); buffer.append(0x5C)  // \\
        case 0x09: buffer.append(0x5C); buffer.append(0x74)  // \t
        case 0x0A: buffer.append(0x5C); buffer.append(0x6E)  // \n
        case 0x0D: buffer.append(0x5C); buffer.append(0x72)  // \r
        case 0x00: fail(message: "COPY row \(count + 1) contains a NUL character, which PostgreSQL text cannot hold")
        default: buffer.append(byte)
        }
    }

    private mutating func fail(message: String) {
        guard sink.failure == nil else { return }
        sink.failure = PostgresError(sqlState: "22021", message: message)
        buffer.removeAll()
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
