import CLibPQ
import Logging

/// One libpq connection (`PGconn`), owned by this object and closed in `deinit`.
///
/// All data goes through parameters (`$1`, `$2`, … in text format); there is no API that
/// splices values into SQL. Server NOTICE/WARNING messages are logged at debug level
/// instead of being printed to stderr. Errors never contain the connection password.
///
/// A connection is not safe for concurrent use: use it from one thread (or task) at a time.
// @unchecked Sendable: the PGconn may move between threads/tasks, but callers guarantee that
// only one of them uses a connection at a time (libpq itself is built thread-safe).
public final class PostgresConnection: @unchecked Sendable {
    /// `PGconn *`; never leaves this class.
    private let conn: OpaquePointer
    private let logger: Logger
    /// Context for the notice processor; must outlive `conn`.
    private let noticeContext: NoticeContext
    /// Password values of the conninfo, scrubbed from every error text.
    private let secrets: [String]
    /// Redacted conninfo, for logs.
    private let redactedConninfo: String
    /// Depth of nested ``transaction(_:)`` calls (savepoints below the outer BEGIN).
    private var transactionDepth = 0

    /// Connects. `conninfo` is a URL (`postgresql://…`) or a `key=value` string.
    /// The client encoding is forced to UTF-8; `application_name` defaults to `herald`.
    /// Throws ``PostgresError`` (with `isConnectionFailure`, password redacted) on failure.
    public init(_ conninfo: String, logger: Logger) throws {
        self.logger = logger
        self.secrets = Conninfo.secrets(conninfo)
        self.redactedConninfo = Conninfo.redact(conninfo)
        self.noticeContext = NoticeContext(logger: logger)

        // expand_dbname = 1: the first "dbname" value is parsed as a full conninfo/URL and the
        // later keywords override it.
        let keywords: [String?] = ["dbname", "client_encoding", "fallback_application_name", nil]
        let values: [String?] = [conninfo, "UTF8", "herald", nil]
        let connection: OpaquePointer? = withCStringArray(keywords) { keywordPointers in
            withCStringArray(values) { valuePointers in
                PQconnectdbParams(keywordPointers, valuePointers, 1)
            }
        }
        guard let connection else {
            throw PostgresError(message: "libpq could not allocate a connection", isConnectionFailure: true)
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let text = Self.string(PQerrorMessage(connection)) ?? "connection failed"
            PQfinish(connection)
            let message = Conninfo.scrub(Self.trimmed(text), secrets: secrets)
            logger.debug("postgres connection failed", metadata: [
                "conninfo": "\(redactedConninfo)", "error": "\(message)",
            ])
            throw PostgresError(message: "\(message) (conninfo: \(redactedConninfo))", isConnectionFailure: true)
        }
        self.conn = connection
        installNoticeProcessor()
        logger.debug("postgres connected", metadata: [
            "conninfo": "\(redactedConninfo)",
            "server_version": "\(PQserverVersion(connection))",
        ])
    }

    deinit {
        PQfinish(conn)
    }

    /// `PQstatus == CONNECTION_OK`. libpq only notices a dead server on the next round trip,
    /// so this can still be true right after the server went away.
    public var isHealthy: Bool {
        PQstatus(conn) == CONNECTION_OK
    }

    /// Server version as an integer, e.g. 150004 for 15.4.
    public var serverVersion: Int {
        Int(PQserverVersion(conn))
    }

    /// Runs one statement with `$1`… parameters (text format; nil = NULL) through `PQexecParams`.
    /// With no parameters it uses `PQexec`, so several statements separated by `;` can run
    /// (migrations); the result is that of the last statement.
    @discardableResult
    public func execute(_ sql: String, _ params: [String?] = []) throws -> PostgresResult {
        let result: OpaquePointer?
        if params.isEmpty {
            result = PQexec(conn, sql)
        } else {
            guard params.count <= 65535 else {
                throw PostgresError(message: "too many parameters (\(params.count)); at most 65535")
            }
            for (index, value) in params.enumerated() where value?.utf8.contains(0) == true {
                throw PostgresError(
                    sqlState: "22021",
                    message: "parameter $\(index + 1) contains a NUL character, which PostgreSQL text cannot hold"
                )
            }
            result = withCStringArray(params) { pointers in
                PQexecParams(conn, sql, Int32(params.count), nil, pointers, nil, nil, 0)
            }
        }
        guard let result else { throw connectionError() }
        defer { PQclear(result) }

        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_SINGLE_TUPLE:
            return Self.makeResult(result)
        case PGRES_COPY_IN:
            _ = PQputCopyEnd(conn, "COPY FROM STDIN must go through copyFrom")
            drainResults()
            throw PostgresError(message: "COPY … FROM STDIN is not supported by execute(); use copyFrom()")
        case PGRES_COPY_OUT, PGRES_COPY_BOTH:
            drainResults()
            throw PostgresError(message: "COPY … TO STDOUT is not supported by execute()")
        default:
            throw error(from: result)
        }
    }

    /// Runs one query with `$1`… text parameters and asks for its result in binary format,
    /// calling `row` with each row's raw column values (nil = NULL): `bytea` as its bytes,
    /// `text` as UTF-8, integers big-endian. Returns the number of rows.
    @discardableResult
    public func queryBinary(_ sql: String, _ params: [String?] = [], row: ([[UInt8]?]) throws -> Void) throws -> Int {
        for (index, value) in params.enumerated() where value?.utf8.contains(0) == true {
            throw PostgresError(
                sqlState: "22021",
                message: "parameter $\(index + 1) contains a NUL character, which PostgreSQL text cannot hold"
            )
        }
        let result = withCStringArray(params) { pointers in
            PQexecParams(conn, sql, Int32(params.count), nil, pointers, nil, nil, 1)
        }
        guard let result else { throw connectionError() }
        defer { PQclear(result) }
        guard PQresultStatus(result) == PGRES_TUPLES_OK else {
            if PQresultStatus(result) == PGRES_COMMAND_OK { return 0 }
            throw error(from: result)
        }
        let rows = PQntuples(result), columns = PQnfields(result)
        var values: [[UInt8]?] = []
        values.reserveCapacity(Int(columns))
        for r in 0..<rows {
            values.removeAll(keepingCapacity: true)
            for c in 0..<columns {
                if PQgetisnull(result, r, c) == 1 {
                    values.append(nil)
                    continue
                }
                let length = Int(PQgetlength(result, r, c))
                guard let base = PQgetvalue(result, r, c) else {
                    values.append([])
                    continue
                }
                values.append(Array(UnsafeRawBufferPointer(start: base, count: length)))
            }
            try row(values)
        }
        return Int(rows)
    }

    /// Runs `body` between `BEGIN` and `COMMIT`; on a thrown error it rolls back and rethrows.
    /// Nested calls use savepoints, so an inner failure only undoes the inner block.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        let depth = transactionDepth
        let savepoint = "herald_savepoint_\(depth)"
        try execute(depth == 0 ? "BEGIN" : "SAVEPOINT \(savepoint)")
        transactionDepth += 1
        defer { transactionDepth = depth }
        let value: T
        do {
            value = try body()
        } catch {
            do {
                try execute(depth == 0 ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT \(savepoint)")
            } catch let rollbackError {
                logger.debug("postgres rollback failed", metadata: ["error": "\(rollbackError)"])
            }
            throw error
        }
        do {
            try execute(depth == 0 ? "COMMIT" : "RELEASE SAVEPOINT \(savepoint)")
        } catch {
            if depth == 0, PQtransactionStatus(conn) != PQTRANS_IDLE {
                _ = try? execute("ROLLBACK")
            }
            throw error
        }
        return value
    }

    /// Runs `copySQL` (a `COPY table [(columns)] FROM STDIN` in text format) and streams the rows
    /// that `build` appends to the server through `PQputCopyData` in chunks of about 256 KiB while
    /// `build` runs. Values are escaped for the text format (backslash, tab, newline, carriage
    /// return); nil becomes `\N`. Returns the number of rows copied (from the command tag).
    ///
    /// If `build` throws, or a value cannot be sent (a NUL character), the COPY is aborted with
    /// `PQputCopyEnd(errormsg)` so nothing is stored, and the error is thrown. A send failure while
    /// `build` runs is remembered and thrown after `build` returns (appending does not throw).
    @discardableResult
    public func copyFrom(_ copySQL: String, _ build: (inout CopyRows) throws -> Void) throws -> Int {
        guard let start = PQexec(conn, copySQL) else { throw connectionError() }
        let startStatus = PQresultStatus(start)
        guard startStatus == PGRES_COPY_IN else {
            defer { PQclear(start) }
            switch startStatus {
            case PGRES_COPY_OUT, PGRES_COPY_BOTH:
                drainResults()
                throw PostgresError(message: "copyFrom() needs a COPY … FROM STDIN statement")
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
                throw PostgresError(message: "copyFrom() needs a COPY … FROM STDIN statement")
            default:
                throw error(from: start)
            }
        }
        PQclear(start)

        let sink = CopySink(connection: self)
        var rows = CopyRows(sink: sink)
        defer { sink.close() }
        var failure: (any Error)?
        do {
            try build(&rows)
            rows.flush()
            failure = sink.failure
        } catch {
            failure = sink.failure ?? error
        }

        if let failure {
            // Abort: the server rolls the COPY back. Prefer a server error if there is one.
            let reason = String(describing: failure).utf8.prefix(200)
            _ = PQputCopyEnd(conn, String(decoding: reason, as: UTF8.self))
            let serverError = finishCopy().error
            if let postgresFailure = failure as? PostgresError, postgresFailure.isConnectionFailure {
                throw postgresFailure
            }
            if let serverError, serverError.isConnectionFailure { throw serverError }
            throw failure
        }

        guard PQputCopyEnd(conn, nil) == 1 else {
            let error = connectionError()
            drainResults()
            throw error
        }
        let outcome = finishCopy()
        if let error = outcome.error { throw error }
        return outcome.rows
    }

    /// Reconnects with the same parameters (`PQreset`). Throws if the connection is still bad.
    public func reconnect() throws {
        logger.debug("postgres reconnecting", metadata: ["conninfo": "\(redactedConninfo)"])
        PQreset(conn)
        transactionDepth = 0
        guard PQstatus(conn) == CONNECTION_OK else {
            let text = Self.string(PQerrorMessage(conn)) ?? "reconnect failed"
            let message = Conninfo.scrub(Self.trimmed(text), secrets: secrets)
            throw PostgresError(message: "\(message) (conninfo: \(redactedConninfo))", isConnectionFailure: true)
        }
    }

    /// Masks passwords in a connection string, for logs and error messages:
    /// `postgresql://user:pw@host/db` → `postgresql://user:***@host/db`, `?password=pw` → `?password=***`,
    /// `password=xyz` / `password='x y'` → `password=***` (also `sslpassword`).
    public static func redact(_ conninfo: String) -> String {
        Conninfo.redact(conninfo)
    }

    // MARK: - COPY plumbing (used by CopySink)

    /// Sends one chunk of COPY data. Returns an error instead of throwing so `CopyRows.append` can stay non-throwing.
    func putCopyData(_ bytes: [UInt8]) -> PostgresError? {
        let status = bytes.withUnsafeBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return 1 }
            return base.withMemoryRebound(to: CChar.self, capacity: buffer.count) {
                PQputCopyData(conn, $0, Int32(buffer.count))
            }
        }
        return status == 1 ? nil : connectionError()
    }

    /// Collects the results after `PQputCopyEnd`: rows copied or the first error.
    private func finishCopy() -> (rows: Int, error: PostgresError?) {
        var rows = 0
        var firstError: PostgresError?
        var sawResult = false
        while let result = PQgetResult(conn) {
            sawResult = true
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_COMMAND_OK:
                rows = Int(Self.string(PQcmdTuples(result)) ?? "") ?? 0
            case PGRES_COPY_IN:
                // Still in COPY state (PQputCopyEnd could not be sent); give up on the connection.
                firstError = firstError ?? connectionError()
                _ = PQputCopyEnd(conn, "aborted")
                if PQstatus(conn) != CONNECTION_OK { return (rows, firstError) }
            default:
                firstError = firstError ?? error(from: result)
            }
        }
        if !sawResult, firstError == nil { firstError = connectionError() }
        return (rows, firstError)
    }

    // MARK: - Helpers

    /// Reads and discards pending results (leaving any COPY state) so the connection is usable again.
    private func drainResults() {
        var guardCount = 0
        while let result = PQgetResult(conn) {
            let status = PQresultStatus(result)
            PQclear(result)
            guardCount += 1
            if status == PGRES_COPY_IN {
                _ = PQputCopyEnd(conn, "aborted by client")
            } else if status == PGRES_COPY_OUT {
                var buffer: UnsafeMutablePointer<CChar>?
                while PQgetCopyData(conn, &buffer, 0) > 0 {
                    PQfreemem(buffer)
                    buffer = nil
                }
            }
            if PQstatus(conn) != CONNECTION_OK || guardCount > 1000 { break }
        }
    }

    /// Error for a missing result or a broken connection.
    private func connectionError() -> PostgresError {
        let text = Self.string(PQerrorMessage(conn)).map(Self.trimmed) ?? ""
        return PostgresError(
            message: Conninfo.scrub(text.isEmpty ? "no result from server (connection lost?)" : text, secrets: secrets),
            isConnectionFailure: true
        )
    }

    private func error(from result: OpaquePointer) -> PostgresError {
        func field(_ code: Int32) -> String? {
            Self.string(PQresultErrorField(result, code)).map { Conninfo.scrub($0, secrets: secrets) }
        }
        let sqlState = field(DiagField.sqlstate)
        var message = field(DiagField.primary)
        if message == nil || message?.isEmpty == true {
            let text = Self.trimmed(Self.string(PQresultErrorMessage(result)) ?? "")
            message = text.isEmpty ? connectionError().message : Conninfo.scrub(text, secrets: secrets)
        }
        let failed = PostgresError.isConnectionState(sqlState)
            || (sqlState == nil && PQstatus(conn) != CONNECTION_OK)
            || PQstatus(conn) == CONNECTION_BAD
        return PostgresError(
            sqlState: sqlState,
            message: message ?? "unknown error",
            detail: field(DiagField.detail),
            hint: field(DiagField.hint),
            isConnectionFailure: failed
        )
    }

    private static func makeResult(_ result: OpaquePointer) -> PostgresResult {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        let columns = (0..<columnCount).map { string(PQfname(result, Int32($0))) ?? "" }
        var values: [String?] = []
        values.reserveCapacity(rowCount * columnCount)
        for row in 0..<Int32(rowCount) {
            for column in 0..<Int32(columnCount) {
                if PQgetisnull(result, row, column) == 1 {
                    values.append(nil)
                } else {
                    values.append(string(PQgetvalue(result, row, column)) ?? "")
                }
            }
        }
        return PostgresResult(
            columns: columns,
            rowCount: rowCount,
            values: values,
            affectedRows: Int(string(PQcmdTuples(result)) ?? "") ?? 0,
            commandTag: string(PQcmdStatus(result)) ?? ""
        )
    }

    private func installNoticeProcessor() {
        let context = Unmanaged.passUnretained(noticeContext).toOpaque()
        _ = PQsetNoticeProcessor(conn, { context, message in
            guard let context, let message else { return }
            let sink = Unmanaged<NoticeContext>.fromOpaque(context).takeUnretainedValue()
            sink.logger.debug("postgres notice", metadata: [
                "message": "\(PostgresConnection.trimmed(String(cString: message)))",
            ])
        }, context)
    }

    static func string(_ pointer: UnsafePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }

    static func string(_ pointer: UnsafeMutablePointer<CChar>?) -> String? {
        pointer.map { String(cString: $0) }
    }

    static func trimmed(_ text: String) -> String {
        var text = Substring(text)
        while let last = text.last, last.isWhitespace { text = text.dropLast() }
        while let first = text.first, first.isWhitespace { text = text.dropFirst() }
        return String(text)
    }
}

/// `PG_DIAG_*` field codes (character-literal macros, which Swift does not import).
private enum DiagField {
    static let sqlstate = Int32(UInt8(ascii: "C"))
    static let primary = Int32(UInt8(ascii: "M"))
    static let detail = Int32(UInt8(ascii: "D"))
    static let hint = Int32(UInt8(ascii: "H"))
}

/// Holds what the C notice processor needs; lives as long as its connection.
private final class NoticeContext {
    let logger: Logger
    init(logger: Logger) { self.logger = logger }
}

/// Calls `body` with a C array of C strings (nil entries stay NULL) that is valid only during the call.
private func withCStringArray<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) throws -> R) rethrows -> R {
    var storage: [CChar] = []
    storage.reserveCapacity(strings.reduce(0) { $0 + ($1?.utf8.count ?? 0) + 1 })
    var offsets: [Int?] = []
    offsets.reserveCapacity(strings.count)
    for string in strings {
        guard let string else {
            offsets.append(nil)
            continue
        }
        offsets.append(storage.count)
        for byte in string.utf8 { storage.append(CChar(bitPattern: byte)) }
        storage.append(0)
    }
    return try storage.withUnsafeBufferPointer { buffer in
        let pointers: [UnsafePointer<CChar>?] = offsets.map { offset in
            offset.flatMap { offset in buffer.baseAddress.map { $0 + offset } }
        }
        return try body(pointers)
    }
}
