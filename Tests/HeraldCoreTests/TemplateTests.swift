import Testing
@testable import HeraldCore

@Suite struct TemplateTests {
    let root = JSONValue.object(JSONObject([
        ("event", .object(JSONObject([
            ("sku", .string("sku-1")), ("card_code", .string("ABCDEFGHIJKLWXYZ")), ("amount", .double(12.5)),
            ("count", .int(3)), ("text", .string("充值未到账，请帮忙查看")), ("at", .string("2026-11-25T16:30:00Z")),
            ("none", .null),
        ]))),
        ("user", .object(JSONObject([("nickname", .string("Ann"))]))),
        ("items", .array([
            .object(JSONObject([("event", .object(JSONObject([("status", .string("shipped"))])))])),
            .object(JSONObject([("event", .object(JSONObject([("status", .string("delivered"))])))])),
        ])),
    ]))

    func render(_ source: String, tz: String = "Asia/Shanghai") throws -> String {
        try Template(parsing: source).render(root, timeZone: tz)
    }

    @Test func rendersPathsAndFilters() throws {
        #expect(try render("Hi {{ user.nickname | default: 'there' }}, {{ event.sku }}!") == "Hi Ann, sku-1!")
        #expect(try render("{{ user.missing | default: 'there' }}") == "there")
        #expect(try render("{{ event.none | default: \"x\" }}") == "x")
        #expect(try render("{{ event.card_code | mask }}") == "ABCD********WXYZ")
        #expect(try render("{{ event.card_code | mask: 2 }}") == "AB************YZ")
        #expect(try render("{{ event.sku | mask }}") == "*****")
        #expect(try render("{{ event.sku | upper }}/{{ user.nickname | lower }}") == "SKU-1/ann")
        #expect(try render("{{ event.text | truncate: 4 }}") == "充值未到…")
        #expect(try render("{{ event.amount }} {{ event.count }}") == "12.5 3")
        #expect(try render("{{ event.at | date: 'yyyy-MM-dd HH:mm' }}") == "2026-11-26 00:30")
        #expect(try render("{{ event.at | date: 'HH:mm' }}", tz: "Europe/London") == "16:30")
        #expect(try render("{{ items | count }} updates: {{ items | map: 'event.status' | join: ', ' }}") == "2 updates: shipped, delivered")
        #expect(try render("no tags") == "no tags")
    }

    @Test func missingVariableFailsTheRender() {
        #expect(throws: RenderError.missingVariable("event.order_id")) { try render("Order {{ event.order_id }}") }
        #expect(throws: RenderError.missingVariable("event.none")) { try render("{{ event.none | upper }}") }
        #expect(RenderError.missingVariable("event.x").reason == "missing_variable:event.x")
    }

    @Test func dateOfANonTimestampIsATemplateError() {
        #expect(throws: RenderError.templateError("date: event.sku is not an RFC 3339 timestamp")) {
            try render("{{ event.sku | date: 'yyyy' }}")
        }
    }

    @Test(arguments: [
        ("{{ event.x", "unclosed '{{'", 0),
        ("ab {{ }}", "expected a variable such as event.order_id", 6),
        ("{{ event.x | shout }}", "unknown filter 'shout' (known: default, mask, upper, lower, truncate, date, count, map, join)", 13),
        ("{{ event.x | truncate }}", "filter 'truncate' needs a non-negative whole number", 13),
        ("{{ event.x | default: 5 }}", "filter 'default' needs a quoted string argument", 22),
        ("{{ event.x | upper: 'a' }}", "filter 'upper' takes no argument", 20),
        ("{{ event.x event.y }}", "expected '|' or '}}'", 11),
    ])
    func syntaxErrors(source: String, message: String, offset: Int) {
        #expect(throws: TemplateSyntaxError(message: message, offset: offset)) { try Template(parsing: source) }
    }
}
