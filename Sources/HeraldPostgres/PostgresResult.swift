/// The fully materialised result of one statement (text format).
public struct PostgresResult: Sendable {
    /// Column names, in order.
    public var columns: [String]
    /// Number of rows returned.
    public var rowCount: Int
    /// Rows affected by INSERT/UPDATE/DELETE/MERGE/COPY/…, from `PQcmdTuples` (0 when none).
    public var affectedRows: Int
    /// The command tag, e.g. `"INSERT 0 1"` or `"SELECT 3"`.
    public var commandTag: String

    /// Row-major values; nil is SQL NULL.
    private var values: [String?]

    public init(columns: [String], rows: [[String?]], affectedRows: Int = 0, commandTag: String = "") {
        precondition(rows.allSatisfy { $0.count == columns.count }, "every row needs one value per column")
        self.columns = columns
        self.rowCount = rows.count
        self.affectedRows = affectedRows
        self.commandTag = commandTag
        self.values = rows.flatMap { $0 }
    }

    init(columns: [String], rowCount: Int, values: [String?], affectedRows: Int, commandTag: String) {
        self.columns = columns
        self.rowCount = rowCount
        self.values = values
        self.affectedRows = affectedRows
        self.commandTag = commandTag
    }

    /// The value at `row`, `column` (0-based); nil for SQL NULL. Out-of-range indices trap, like arrays.
    public subscript(row: Int, column: Int) -> String? {
        precondition(row >= 0 && row < rowCount, "row \(row) out of range 0..<\(rowCount)")
        precondition(column >= 0 && column < columns.count, "column \(column) out of range 0..<\(columns.count)")
        return values[row * columns.count + column]
    }

    /// The value at `row` in the first column named `column`; nil for SQL NULL **or an unknown column name**
    /// (use ``columnIndex(_:)`` to tell them apart). An out-of-range row traps.
    public subscript(row: Int, column: String) -> String? {
        guard let index = columnIndex(column) else { return nil }
        return self[row, index]
    }

    /// Index of the first column named `name`.
    public func columnIndex(_ name: String) -> Int? {
        columns.firstIndex(of: name)
    }

    /// All rows; each has `columns.count` values.
    public var rows: [[String?]] {
        let width = columns.count
        guard width > 0 else { return Array(repeating: [], count: rowCount) }
        return (0..<rowCount).map { Array(values[($0 * width)..<(($0 + 1) * width)]) }
    }
}
