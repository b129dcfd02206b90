/// A condition or computed time from the rules file (SPEC §4), parsed once at load.
public indirect enum Expression: Sendable, Equatable {
    case literal(Value)
    /// `event.amount`, `user.nickname`: a path into the evaluation context.
    case path(String)
    /// `user.count('orders.order_paid')`: index into the counts the trigger keeps.
    case userCount(EventPattern)
    case list([Expression])
    case not(Expression)
    case negate(Expression)
    case and(Expression, Expression)
    case or(Expression, Expression)
    case binary(BinaryOperator, Expression, Expression)

    public enum BinaryOperator: String, Sendable, Equatable, CaseIterable {
        case equal = "==", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
        case add = "+", subtract = "-", multiply = "*", divide = "/"
        case `in`, contains, containsAny = "contains_any", startsWith = "starts_with"
    }

    /// Every `user.count(...)` pattern the expression reads.
    public var countedPatterns: [EventPattern] {
        switch self {
        case .userCount(let p): return [p]
        case .literal, .path: return []
        case .list(let items): return items.flatMap(\.countedPatterns)
        case .not(let e), .negate(let e): return e.countedPatterns
        case .and(let a, let b), .or(let a, let b), .binary(_, let a, let b): return a.countedPatterns + b.countedPatterns
        }
    }

    /// Every path the expression reads.
    public var paths: [String] {
        switch self {
        case .path(let p): return [p]
        case .literal, .userCount: return []
        case .list(let items): return items.flatMap(\.paths)
        case .not(let e), .negate(let e): return e.paths
        case .and(let a, let b), .or(let a, let b), .binary(_, let a, let b): return a.paths + b.paths
        }
    }
}

/// A value during evaluation. JSON has no timestamp type: strings become timestamps where
/// one is expected.
public enum Value: Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case timestamp(Timestamp)
    case duration(TimeSpan)
    case list([Value])

    public init(_ json: JSONValue) {
        switch json {
        case .null, .object: self = .null
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .number(Double(i))
        case .double(let d): self = .number(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .list(a.map(Value.init))
        }
    }

    public var description: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return String(b)
        case .number(let n): return n.rounded() == n && abs(n) < 1e15 ? String(Int64(n)) : String(n)
        case .string(let s): return "'\(s)'"
        case .timestamp(let t): return t.rfc3339
        case .duration(let d): return d.description
        case .list(let l): return "[" + l.map(\.description).joined(separator: ", ") + "]"
        }
    }

    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .number: return "number"
        case .string: return "string"
        case .timestamp: return "timestamp"
        case .duration: return "duration"
        case .list: return "list"
        }
    }
}

/// Why an expression could not be evaluated for one firing (a string that is not a
/// timestamp where one is needed); the firing becomes `failed` with this reason.
public struct EvaluationError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// What an expression reads: the event, the user's facts and the counts the trigger keeps.
public protocol EvaluationContext {
    func value(at path: String) -> Value
    func count(_ pattern: EventPattern) -> Int
}

extension Expression {
    /// Evaluates as a condition: anything but `true` is false.
    public func isTrue(in context: some EvaluationContext) throws(EvaluationError) -> Bool {
        try evaluate(in: context) == .bool(true)
    }

    public func evaluate(in context: some EvaluationContext) throws(EvaluationError) -> Value {
        switch self {
        case .literal(let v): return v
        case .path(let p): return context.value(at: p)
        case .userCount(let pattern): return .number(Double(context.count(pattern)))
        case .list(let items):
            var out: [Value] = []
            out.reserveCapacity(items.count)
            for item in items { out.append(try item.evaluate(in: context)) }
            return .list(out)
        case .not(let e):
            return .bool(try e.evaluate(in: context) != .bool(true))
        case .negate(let e):
            switch try e.evaluate(in: context) {
            case .number(let n): return .number(-n)
            case .duration(let d): return .duration(TimeSpan(microseconds: -d.microseconds))
            default: return .null
            }
        case .and(let a, let b):
            guard try a.evaluate(in: context) == .bool(true) else { return .bool(false) }
            return .bool(try b.evaluate(in: context) == .bool(true))
        case .or(let a, let b):
            if try a.evaluate(in: context) == .bool(true) { return .bool(true) }
            return .bool(try b.evaluate(in: context) == .bool(true))
        case .binary(let op, let a, let b):
            return try Expression.apply(op, try a.evaluate(in: context), try b.evaluate(in: context),
                                        nullLiteral: b == .literal(.null) || a == .literal(.null))
        }
    }

    static func timestamp(_ v: Value) throws(EvaluationError) -> Timestamp? {
        switch v {
        case .timestamp(let t): return t
        case .string(let s):
            guard let t = Timestamp(rfc3339: s) else {
                throw EvaluationError("'\(s.prefix(64))' is not an RFC 3339 timestamp")
            }
            return t
        default: return nil
        }
    }

    static func apply(_ op: BinaryOperator, _ a: Value, _ b: Value, nullLiteral: Bool) throws(EvaluationError) -> Value {
        switch op {
        case .equal, .notEqual:
            // `x == null` and `x != null` test presence; any other comparison with null is false.
            if nullLiteral { return .bool((a == b) == (op == .equal)) }
            if a == .null || b == .null { return .bool(false) }
            let equal: Bool
            switch (a, b) {
            case (.timestamp, .string), (.string, .timestamp):
                equal = try timestamp(a) == timestamp(b)
            default:
                equal = a == b
            }
            return .bool(equal == (op == .equal))
        case .less, .lessOrEqual, .greater, .greaterOrEqual:
            let order: Int
            switch (a, b) {
            case (.number(let x), .number(let y)): order = x < y ? -1 : (x == y ? 0 : 1)
            case (.timestamp, _), (_, .timestamp):
                guard let x = try timestamp(a), let y = try timestamp(b) else { return .bool(false) }
                order = x < y ? -1 : (x == y ? 0 : 1)
            case (.duration(let x), .duration(let y)): order = x < y ? -1 : (x == y ? 0 : 1)
            case (.string(let x), .string(let y)): order = x < y ? -1 : (x == y ? 0 : 1)
            default: return .bool(false)
            }
            switch op {
            case .less: return .bool(order < 0)
            case .lessOrEqual: return .bool(order <= 0)
            case .greater: return .bool(order > 0)
            default: return .bool(order >= 0)
            }
        case .add, .subtract:
            switch (a, b) {
            case (.number(let x), .number(let y)): return .number(op == .add ? x + y : x - y)
            case (.duration(let x), .duration(let y)):
                return .duration(TimeSpan(microseconds: op == .add ? x.microseconds &+ y.microseconds : x.microseconds &- y.microseconds))
            case (_, .duration(let d)):
                guard let t = try timestamp(a) else { return .null }
                return .timestamp(op == .add ? t + d : t - d)
            case (.duration(let d), _) where op == .add:
                guard let t = try timestamp(b) else { return .null }
                return .timestamp(t + d)
            case (.string(let x), .string(let y)) where op == .add:
                return .string(x + y)
            case (.timestamp, _) where op == .subtract, (.string, .timestamp) where op == .subtract:
                guard let x = try timestamp(a), let y = try timestamp(b) else { return .null }
                return .duration(x - y)
            default: return .null
            }
        case .multiply, .divide:
            guard case .number(let x) = a, case .number(let y) = b else { return .null }
            if op == .multiply { return .number(x * y) }
            return y == 0 ? .null : .number(x / y)
        case .in:
            guard a != .null, case .list(let items) = b else { return .bool(false) }
            return .bool(items.contains(a))
        case .contains:
            switch (a, b) {
            case (.string(let s), .string(let needle)): return .bool(s.contains(needle))
            case (.list(let items), _) where b != .null: return .bool(items.contains(b))
            default: return .bool(false)
            }
        case .containsAny:
            guard case .list(let needles) = b else { return .bool(false) }
            switch a {
            case .string(let s):
                return .bool(needles.contains { if case .string(let n) = $0 { return s.contains(n) } else { return false } })
            case .list(let items):
                return .bool(needles.contains { items.contains($0) })
            default: return .bool(false)
            }
        case .startsWith:
            guard case .string(let s) = a, case .string(let p) = b else { return .bool(false) }
            return .bool(s.hasPrefix(p))
        }
    }
}
