/// A syntax or type error in an expression, at a character offset of its source.
public struct ExpressionError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var offset: Int
    public var description: String { message }
}

/// The type of an expression where it can be known at load time.
public enum StaticType: String, Sendable, Equatable {
    case unknown, bool, number, string, timestamp, duration, list, null

    var name: String { self == .bool ? "boolean" : rawValue }
}

/// Parses SPEC §4 expressions and checks the types that can be seen at load time.
public struct ExpressionParser {
    public static let maxDepth = 64

    /// Parses `source`; `expecting` checks the result type (bool for `where`, timestamp for `at`).
    public static func parse(_ source: String, expecting: StaticType? = nil) throws(ExpressionError) -> Expression {
        var p = ExpressionParser(source: source)
        let tokens = try p.tokenize()
        p.tokens = tokens
        let (expr, type) = try p.parseOr(depth: 0)
        guard p.position == tokens.count - 1 else {
            throw ExpressionError(message: "unexpected \(tokens[p.position].text) after the expression",
                                  offset: tokens[p.position].offset)
        }
        if let expecting, type != .unknown, type != expecting {
            throw ExpressionError(message: "expected a \(expecting.name) expression, but this is a \(type.name)", offset: 0)
        }
        return expr
    }

    // MARK: Tokens

    enum Kind: Equatable {
        case identifier(String)   // event.amount, user.count, and, in, …
        case number(Double)
        case duration(TimeSpan)
        case string(String)
        case symbol(String)       // == != <= >= < > + - * / ( ) [ ] ,
        case end
    }

    struct Token {
        var kind: Kind
        var offset: Int
        var text: String
    }

    let chars: [Character]
    var tokens: [Token] = []
    var position = 0

    init(source: String) {
        chars = Array(source)
    }

    mutating func tokenize() throws(ExpressionError) -> [Token] {
        var out: [Token] = []
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c.isWhitespace { i += 1; continue }
            let start = i
            if c.isLetter || c == "_" {
                while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == "." { i += 1 }
                let text = String(chars[start..<i])
                if text.hasSuffix(".") || text.contains("..") {
                    throw ExpressionError(message: "'\(text)' is not a valid name", offset: start)
                }
                out.append(Token(kind: .identifier(text), offset: start, text: "'\(text)'"))
            } else if c.isASCII, c.isNumber {
                while i < chars.count, chars[i].isASCII, chars[i].isNumber || chars[i] == "." { i += 1 }
                if i < chars.count, chars[i].isLetter {
                    // A duration such as 3d or 1h30m.
                    while i < chars.count, chars[i].isASCII, chars[i].isLetter || chars[i].isNumber { i += 1 }
                    let text = String(chars[start..<i])
                    guard let d = TimeSpan(parsing: text) else {
                        throw ExpressionError(message: "'\(text)' is not a duration (use s, m, h, d as in 90s, 1h30m, 3d)", offset: start)
                    }
                    out.append(Token(kind: .duration(d), offset: start, text: "'\(text)'"))
                } else {
                    let text = String(chars[start..<i])
                    guard let n = Double(text) else { throw ExpressionError(message: "'\(text)' is not a number", offset: start) }
                    out.append(Token(kind: .number(n), offset: start, text: "'\(text)'"))
                }
            } else if c == "'" || c == "\"" {
                i += 1
                var s = ""
                while i < chars.count, chars[i] != c {
                    if chars[i] == "\\", i + 1 < chars.count { i += 1 }
                    s.append(chars[i])
                    i += 1
                }
                guard i < chars.count else { throw ExpressionError(message: "unterminated string", offset: start) }
                i += 1
                out.append(Token(kind: .string(s), offset: start, text: "string"))
            } else {
                let two = i + 1 < chars.count ? String(chars[i...(i + 1)]) : ""
                if ["==", "!=", "<=", ">="].contains(two) {
                    out.append(Token(kind: .symbol(two), offset: start, text: "'\(two)'"))
                    i += 2
                } else if "<>+-*/()[],".contains(c) {
                    out.append(Token(kind: .symbol(String(c)), offset: start, text: "'\(c)'"))
                    i += 1
                } else if c == "=" {
                    throw ExpressionError(message: "use '==' to compare", offset: start)
                } else {
                    throw ExpressionError(message: "unexpected character '\(c)'", offset: start)
                }
            }
        }
        out.append(Token(kind: .end, offset: chars.count, text: "end of expression"))
        return out
    }

    // MARK: Grammar

    var current: Token { tokens[position] }

    func isKeyword(_ word: String) -> Bool {
        if case .identifier(let w) = current.kind { return w == word }
        return false
    }

    func isSymbol(_ s: String) -> Bool {
        if case .symbol(let x) = current.kind { return x == s }
        return false
    }

    mutating func expect(_ s: String) throws(ExpressionError) {
        guard isSymbol(s) else { throw ExpressionError(message: "expected '\(s)' but found \(current.text)", offset: current.offset) }
        position += 1
    }

    func checkChain(_ depth: Int) throws(ExpressionError) {
        guard depth < Self.maxDepth else {
            throw ExpressionError(message: "expression nested deeper than \(Self.maxDepth) levels (a chain of operators counts one level per operator)",
                                  offset: current.offset)
        }
    }

    mutating func parseOr(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        guard depth < Self.maxDepth else {
            throw ExpressionError(message: "expression nested deeper than \(Self.maxDepth) levels", offset: current.offset)
        }
        var (lhs, _) = try parseAnd(depth: depth)
        var type = StaticType.unknown
        var links = 0
        while isKeyword("or") {
            // A chain `a or b or c` is a left-deep tree: each link is a level, so a long
            // chain is bounded like nesting (evaluation and deallocation recurse per level).
            links += 1
            try checkChain(depth + links)
            position += 1
            let (rhs, _) = try parseAnd(depth: depth + links)
            lhs = .or(lhs, rhs)
            type = .bool
        }
        if type == .bool { return (lhs, .bool) }
        return (lhs, try typeOf(lhs))
    }

    mutating func parseAnd(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        var (lhs, t) = try parseNot(depth: depth)
        var links = 0
        while isKeyword("and") {
            links += 1
            try checkChain(depth + links)
            position += 1
            let (rhs, _) = try parseNot(depth: depth + links)
            lhs = .and(lhs, rhs)
            t = .bool
        }
        return (lhs, t)
    }

    mutating func parseNot(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        if isKeyword("not") {
            position += 1
            guard depth + 1 < Self.maxDepth else {
                throw ExpressionError(message: "expression nested deeper than \(Self.maxDepth) levels", offset: current.offset)
            }
            let (e, _) = try parseNot(depth: depth + 1)
            return (.not(e), .bool)
        }
        return try parseComparison(depth: depth)
    }

    static let comparisons: [String: Expression.BinaryOperator] = [
        "==": .equal, "!=": .notEqual, "<": .less, "<=": .lessOrEqual, ">": .greater, ">=": .greaterOrEqual,
        "in": .in, "contains": .contains, "contains_any": .containsAny, "starts_with": .startsWith,
    ]

    mutating func parseComparison(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        let (lhs, lt) = try parseAdditive(depth: depth)
        let opText: String?
        switch current.kind {
        case .symbol(let s) where Self.comparisons[s] != nil: opText = s
        case .identifier(let w) where Self.comparisons[w] != nil: opText = w
        default: opText = nil
        }
        guard let opText, let op = Self.comparisons[opText] else { return (lhs, lt) }
        let opOffset = current.offset
        position += 1
        let rhsOffset = current.offset
        let (rhs, rt) = try parseAdditive(depth: depth)
        try Self.checkComparison(op, lt, rt, opOffset: opOffset, rhsOffset: rhsOffset)
        return (.binary(op, lhs, rhs), .bool)
    }

    static func checkComparison(_ op: Expression.BinaryOperator, _ a: StaticType, _ b: StaticType, opOffset: Int, rhsOffset: Int) throws(ExpressionError) {
        switch op {
        case .in, .containsAny:
            if b != .unknown, b != .list {
                throw ExpressionError(message: "'\(op.rawValue)' needs a list on its right, such as ['a', 'b'], not a \(b.name)", offset: rhsOffset)
            }
        case .startsWith:
            if b != .unknown, b != .string { throw ExpressionError(message: "'starts_with' needs a string, not a \(b.name)", offset: rhsOffset) }
            if a != .unknown, a != .string { throw ExpressionError(message: "'starts_with' applies to strings, not a \(a.name)", offset: opOffset) }
        case .contains:
            if a != .unknown, a != .string, a != .list {
                throw ExpressionError(message: "'contains' applies to strings and lists, not a \(a.name)", offset: opOffset)
            }
        default:
            guard a != .unknown, b != .unknown, a != .null, b != .null, a != b else { return }
            // A string may be a timestamp in RFC 3339 form.
            if (a == .timestamp && b == .string) || (a == .string && b == .timestamp) { return }
            throw ExpressionError(message: "cannot compare a \(a.name) with a \(b.name)", offset: opOffset)
        }
    }

    static let additive: [String: Expression.BinaryOperator] = ["+": .add, "-": .subtract]
    static let multiplicative: [String: Expression.BinaryOperator] = ["*": .multiply, "/": .divide]

    /// `+ -` (additive) over `* /` (multiplicative) over unary.
    mutating func parseAdditive(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        try parseArithmetic(Self.additive, depth: depth)
    }

    mutating func parseArithmetic(_ ops: [String: Expression.BinaryOperator], depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        let additive = ops == Self.additive
        var (lhs, lt) = additive ? try parseArithmetic(Self.multiplicative, depth: depth) : try parseUnary(depth: depth)
        var links = 0
        while case .symbol(let s) = current.kind, let op = ops[s] {
            links += 1
            try checkChain(depth + links)
            let opOffset = current.offset
            position += 1
            let (rhs, rt) = additive ? try parseArithmetic(Self.multiplicative, depth: depth + links) : try parseUnary(depth: depth + links)
            lt = try Self.arithmeticType(op, lt, rt, offset: opOffset)
            lhs = .binary(op, lhs, rhs)
        }
        return (lhs, lt)
    }

    static func arithmeticType(_ op: Expression.BinaryOperator, _ a: StaticType, _ b: StaticType, offset: Int) throws(ExpressionError) -> StaticType {
        func fail() throws(ExpressionError) -> Never {
            throw ExpressionError(message: "cannot apply '\(op.rawValue)' to a \(a.name) and a \(b.name)", offset: offset)
        }
        if a == .bool || b == .bool || a == .list || b == .list || a == .null || b == .null { try fail() }
        switch op {
        case .multiply, .divide:
            if (a != .unknown && a != .number) || (b != .unknown && b != .number) { try fail() }
            return .number
        default:
            switch (a, b) {
            case (.number, .number): return .number
            case (.duration, .duration): return .duration
            case (.timestamp, .duration), (.unknown, .duration), (.string, .duration): return .timestamp
            case (.duration, .timestamp), (.duration, .unknown), (.duration, .string):
                if op == .subtract { try fail() }
                return .timestamp
            case (.timestamp, .timestamp) where op == .subtract: return .duration
            case (.timestamp, .unknown) where op == .subtract: return .duration
            case (.string, .string) where op == .add: return .string
            case (.unknown, _), (_, .unknown): return .unknown
            default: try fail()
            }
        }
    }

    mutating func parseUnary(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        if isSymbol("-") {
            let offset = current.offset
            position += 1
            guard depth + 1 < Self.maxDepth else {
                throw ExpressionError(message: "expression nested deeper than \(Self.maxDepth) levels", offset: offset)
            }
            let (e, t) = try parseUnary(depth: depth + 1)
            if t != .unknown, t != .number, t != .duration {
                throw ExpressionError(message: "cannot negate a \(t.name)", offset: offset)
            }
            return (.negate(e), t)
        }
        return try parsePrimary(depth: depth)
    }

    mutating func parsePrimary(depth: Int) throws(ExpressionError) -> (Expression, StaticType) {
        let token = current
        switch token.kind {
        case .number(let n):
            position += 1
            return (.literal(.number(n)), .number)
        case .duration(let d):
            position += 1
            return (.literal(.duration(d)), .duration)
        case .string(let s):
            position += 1
            return (.literal(.string(s)), .string)
        case .symbol("("):
            position += 1
            let (e, t) = try parseOr(depth: depth + 1)
            try expect(")")
            return (e, t)
        case .symbol("["):
            position += 1
            var items: [Expression] = []
            if !isSymbol("]") {
                while true {
                    let (item, _) = try parseOr(depth: depth + 1)
                    items.append(item)
                    if isSymbol(",") { position += 1; continue }
                    break
                }
            }
            try expect("]")
            return (.list(items), .list)
        case .identifier(let name):
            position += 1
            switch name {
            case "true": return (.literal(.bool(true)), .bool)
            case "false": return (.literal(.bool(false)), .bool)
            case "null": return (.literal(.null), .null)
            case "user.count":
                try expect("(")
                guard case .string(let eventName) = current.kind else {
                    throw ExpressionError(message: "user.count takes an event name in quotes, such as 'orders.order_paid'", offset: current.offset)
                }
                guard let pattern = EventPattern(parsing: eventName) else {
                    throw ExpressionError(message: "'\(eventName)' is not an event name: use orders.<type>, behavior.<type>, orders.*, behavior.* or *", offset: current.offset)
                }
                position += 1
                try expect(")")
                return (.userCount(pattern), .number)
            case "user.first_seen", "user.last_seen":
                return (.path(name), .timestamp)
            default:
                let root = name.split(separator: ".").first.map(String.init) ?? name
                guard root == "event" || root == "user", name.contains(".") else {
                    if Self.comparisons[name] != nil || ["and", "or", "not"].contains(name) {
                        throw ExpressionError(message: "expected a value before '\(name)'", offset: token.offset)
                    }
                    throw ExpressionError(message: "unknown name '\(name)': values are event.<field>, user.<field>, literals or user.count('<event>')", offset: token.offset)
                }
                if isSymbol("(") {
                    throw ExpressionError(message: "unknown function '\(name)' (the only one is user.count)", offset: token.offset)
                }
                return (.path(name), .unknown)
            }
        case .end:
            throw ExpressionError(message: "the expression ends too early", offset: token.offset)
        case .symbol(let s):
            throw ExpressionError(message: "unexpected '\(s)'", offset: token.offset)
        }
    }

    /// The static type of an already-parsed expression (for `or` chains).
    func typeOf(_ e: Expression) throws(ExpressionError) -> StaticType {
        switch e {
        case .literal(let v):
            switch v {
            case .null: return .null
            case .bool: return .bool
            case .number: return .number
            case .string: return .string
            case .timestamp: return .timestamp
            case .duration: return .duration
            case .list: return .list
            }
        case .path(let p): return p == "user.first_seen" || p == "user.last_seen" ? .timestamp : .unknown
        case .userCount: return .number
        case .list: return .list
        case .not, .and, .or: return .bool
        case .negate(let inner): return try typeOf(inner)
        case .binary(let op, let a, let b):
            switch op {
            case .add, .subtract, .multiply, .divide:
                return try Self.arithmeticType(op, try typeOf(a), try typeOf(b), offset: 0)
            default: return .bool
            }
        }
    }
}
