import Testing
@testable import HeraldCore

struct FakeContext: EvaluationContext {
    var values: [String: Value] = [:]
    var counts: [String: Int] = [:]
    func value(at path: String) -> Value { values[path] ?? .null }
    func count(_ pattern: EventPattern) -> Int { counts[pattern.description] ?? 0 }
}

@Suite struct ExpressionTests {
    let ctx = FakeContext(values: [
        "event.amount": .number(12.5), "event.text": .string("充值未到账，请帮忙查看"), "event.sku": .string("sku-9"),
        "event.due_at": .string("2026-12-01T00:00:00Z"), "event.bad_time": .string("soon"),
        "event.tags": .list([.string("vip"), .string("new")]), "user.nickname": .string("Ann"),
        "user.first_seen": .timestamp(Timestamp(rfc3339: "2026-11-01T00:00:00Z")!), "event.flag": .bool(true),
    ], counts: ["orders.order_paid": 1])

    func eval(_ source: String) throws -> Value {
        try ExpressionParser.parse(source).evaluate(in: ctx)
    }

    @Test(arguments: [
        ("event.amount > 0", true), ("event.amount >= 12.5", true), ("event.amount < 12.5", false),
        ("event.amount <= 12.5", true), ("event.amount == 12.5", true), ("event.amount != 12.5", false),
        ("event.amount > 10 and event.sku == 'sku-9'", true), ("event.amount > 100 or event.flag", true),
        ("not event.amount > 100", true), ("not (event.amount > 10 and event.flag)", false),
        ("event.sku in ['sku-1', 'sku-9']", true), ("event.sku in ['sku-1']", false),
        ("event.text contains '未到账'", true), ("event.tags contains 'vip'", true), ("event.tags contains 'old'", false),
        ("event.text contains_any ['未到账', '没收到', 'not received']", true), ("event.sku contains_any ['x', 'y']", false),
        ("event.tags contains_any ['old', 'new']", true),
        ("event.sku starts_with 'sku-'", true), ("event.sku starts_with 'SKU'", false),
        ("event.amount * 2 - 5 == 20", true), ("event.amount / 2 == 6.25", true), ("-event.amount < 0", true),
        ("event.amount + 1 * 2 == 14.5", true), ("(event.amount + 1) * 2 == 27", true),
        ("user.count('orders.order_paid') == 1", true), ("user.count('orders.refunded') == 0", true),
        ("event.due_at - 3d == '2026-11-28T00:00:00Z'", true), ("event.due_at > user.first_seen + 20d", true),
        ("event.due_at - user.first_seen == 30d", true), ("1h30m == 90m", true),
        ("user.nickname == 'Ann'", true), ("'a' + 'b' == 'ab'", true),
        // null: comparisons are false, presence tests work.
        ("event.missing > 0", false), ("event.missing < 0", false), ("event.missing == 0", false),
        ("event.missing != 0", false), ("event.missing == null", true), ("event.amount != null", true),
        ("event.missing contains 'x'", false), ("event.missing in ['x']", false), ("not event.missing", true),
        ("event.missing + 1 > 0", false), ("event.amount / 0 > 0", false),
        ("true and not false", true),
    ])
    func evaluates(source: String, expected: Bool) throws {
        #expect(try eval(source) == .bool(expected), "\(source)")
    }

    @Test func computesTimes() throws {
        #expect(try eval("event.due_at - 1d") == .timestamp(Timestamp(rfc3339: "2026-11-30T00:00:00Z")!))
        #expect(try eval("event.due_at") == .string("2026-12-01T00:00:00Z"))
    }

    @Test func aStringThatIsNotATimestampFailsTheFiring() {
        #expect(throws: EvaluationError("'soon' is not an RFC 3339 timestamp")) { try eval("event.bad_time - 1d") }
        #expect(throws: EvaluationError("'soon' is not an RFC 3339 timestamp")) { try eval("event.bad_time > user.first_seen") }
    }

    @Test(arguments: [
        ("event.amount >", "the expression ends too early", 14),
        ("event.amount = 1", "use '==' to compare", 13),
        ("amount > 1", "unknown name 'amount': values are event.<field>, user.<field>, literals or user.count('<event>')", 0),
        ("event.a > 1 1", "unexpected '1' after the expression", 12),
        ("user.count(orders.paid)", "user.count takes an event name in quotes, such as 'orders.order_paid'", 11),
        ("user.count('paid') > 1", "'paid' is not an event name: use orders.<type>, behavior.<type>, orders.*, behavior.* or *", 11),
        ("user.count('orders.paid') == 'one'", "cannot compare a number with a string", 26),
        ("3d > 5", "cannot compare a duration with a number", 3),
        ("event.sku in 'abc'", "'in' needs a list on its right, such as ['a', 'b'], not a string", 13),
        ("event.text contains_any 'x'", "'contains_any' needs a list on its right, such as ['a', 'b'], not a string", 24),
        ("5 starts_with 'a'", "'starts_with' applies to strings, not a number", 2),
        ("'a' * 2", "cannot apply '*' to a string and a number", 4),
        ("event.x - 5q", "'5q' is not a duration (use s, m, h, d as in 90s, 1h30m, 3d)", 10),
        ("event.x == 'open", "unterminated string", 11),
        ("event.x > 1 and", "the expression ends too early", 15),
        ("foo(1)", "unknown name 'foo': values are event.<field>, user.<field>, literals or user.count('<event>')", 0),
        ("event.x ? 1", "unexpected character '?'", 8),
    ])
    func syntaxAndTypeErrors(source: String, message: String, offset: Int) {
        #expect(throws: ExpressionError(message: message, offset: offset)) { try ExpressionParser.parse(source) }
    }

    @Test func checksTheResultType() {
        #expect(throws: ExpressionError(message: "expected a boolean expression, but this is a number", offset: 0)) {
            try ExpressionParser.parse("1 + 2", expecting: .bool)
        }
        #expect(throws: ExpressionError(message: "expected a timestamp expression, but this is a number", offset: 0)) {
            try ExpressionParser.parse("user.count('orders.x') + 1", expecting: .timestamp)
        }
        #expect(throws: Never.self) { try ExpressionParser.parse("event.due_at - 3d", expecting: .timestamp) }
        #expect(throws: Never.self) { try ExpressionParser.parse("event.due_at", expecting: .timestamp) }
    }

    @Test func refusesHostileNesting() {
        let deep = String(repeating: "(", count: 200) + "1" + String(repeating: ")", count: 200)
        #expect(throws: ExpressionError.self) { try ExpressionParser.parse(deep) }
        let nots = String(repeating: "not ", count: 500) + "true"
        #expect(throws: ExpressionError.self) { try ExpressionParser.parse(nots) }
        let ok = String(repeating: "(", count: 30) + "1" + String(repeating: ")", count: 30) + " == 1"
        #expect(throws: Never.self) { try ExpressionParser.parse(ok) }
    }
}

@Suite struct HashSet64Tests {
    @Test func behavesLikeASet() {
        var ours = HashSet64()
        var reference = Set<UInt64>()
        var rng = SplitMix64(seed: 3)
        for _ in 0..<50_000 {
            let a = rng.next() % 5000
            #expect(ours.insert(a) == reference.insert(a).inserted)
        }
        #expect(ours.count == reference.count)
        #expect(ours.contains(0) == reference.contains(0))
        #expect(!ours.contains(99_999))
        #expect(Set(ours.all) == reference)
    }
}
