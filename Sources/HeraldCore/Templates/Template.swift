import Foundation

/// A message template (SPEC §4): literal text with `{{ path | filter: arg | … }}` tags,
/// parsed once when the rules file loads.
public struct Template: Sendable, Equatable {
    public enum Part: Sendable, Equatable {
        case text(String)
        case tag(Tag)
    }

    public struct Tag: Sendable, Equatable {
        public var path: String
        public var filters: [Filter]
        /// Character offset of the tag in the template source, for error messages.
        public var offset: Int
        /// `path` split at its dots, once when the template is parsed.
        public var components: [String]

        init(path: String, filters: [Filter], offset: Int) {
            self.path = path
            self.filters = filters
            self.offset = offset
            components = path.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        }
    }

    public enum Filter: Sendable, Equatable {
        case `default`(String)
        case mask(Int)
        case upper
        case lower
        case truncate(Int)
        case date(String)
        case count
        case map(String)
        case join(String)
    }

    public var parts: [Part]
    public var source: String

    /// The paths this template reads (for validation and for trimming what a candidate carries).
    public var paths: [String] {
        parts.compactMap { if case .tag(let t) = $0 { return t.path } else { return nil } }
    }
}

public struct TemplateSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// Character offset in the template source.
    public var offset: Int
    public var description: String { message }
}

/// Why a template could not be rendered. Its `reason` is the outcome reason of SPEC §6.
public enum RenderError: Error, Sendable, Equatable, CustomStringConvertible {
    case missingVariable(String)
    case templateError(String)

    public var reason: String {
        switch self {
        case .missingVariable(let path): return "missing_variable:\(path)"
        case .templateError(let detail): return "template_error:\(detail)"
        }
    }

    public var description: String { reason }
}

extension Template {
    public static let filterNames = ["default", "mask", "upper", "lower", "truncate", "date", "count", "map", "join"]

    public init(parsing source: String) throws(TemplateSyntaxError) {
        self.source = source
        var parts: [Part] = []
        let chars = Array(source)
        var i = 0
        var literal = ""
        while i < chars.count {
            if chars[i] == "{", i + 1 < chars.count, chars[i + 1] == "{" {
                let start = i
                var j = i + 2
                var found = false
                var quote: Character? = nil
                while j + 1 < chars.count {
                    if let q = quote {
                        if chars[j] == q { quote = nil }
                    } else if chars[j] == "'" || chars[j] == "\"" {
                        quote = chars[j]
                    } else if chars[j] == "}" && chars[j + 1] == "}" {
                        found = true
                        break
                    }
                    j += 1
                }
                guard found else { throw TemplateSyntaxError(message: "unclosed '{{'", offset: start) }
                if !literal.isEmpty {
                    parts.append(.text(literal))
                    literal = ""
                }
                parts.append(.tag(try Template.parseTag(chars[(i + 2)..<j], offset: start + 2)))
                i = j + 2
            } else {
                literal.append(chars[i])
                i += 1
            }
        }
        if !literal.isEmpty { parts.append(.text(literal)) }
        self.parts = parts
    }

    private static func parseTag(_ body: ArraySlice<Character>, offset: Int) throws(TemplateSyntaxError) -> Tag {
        var scanner = TagScanner(chars: Array(body), base: offset)
        scanner.skipSpaces()
        let pathStart = scanner.position
        guard let path = scanner.path() else {
            throw TemplateSyntaxError(message: "expected a variable such as event.order_id", offset: pathStart)
        }
        var filters: [Filter] = []
        while true {
            scanner.skipSpaces()
            if scanner.atEnd { break }
            guard scanner.consume("|") else {
                throw TemplateSyntaxError(message: "expected '|' or '}}'", offset: scanner.position)
            }
            scanner.skipSpaces()
            let nameAt = scanner.position
            guard let name = scanner.identifier() else {
                throw TemplateSyntaxError(message: "expected a filter name", offset: nameAt)
            }
            scanner.skipSpaces()
            var arg: TagScanner.Argument? = nil
            let argAt: Int
            if scanner.consume(":") {
                scanner.skipSpaces()
                argAt = scanner.position
                guard let a = scanner.argument() else {
                    throw TemplateSyntaxError(message: "expected a quoted string or a number after '\(name):'", offset: argAt)
                }
                arg = a
            } else {
                argAt = nameAt
            }
            filters.append(try makeFilter(name, arg, nameAt: nameAt, argAt: argAt))
        }
        return Tag(path: path, filters: filters, offset: pathStart)
    }

    private static func makeFilter(_ name: String, _ arg: TagScanner.Argument?, nameAt: Int, argAt: Int) throws(TemplateSyntaxError) -> Filter {
        func needString() throws(TemplateSyntaxError) -> String {
            guard case .string(let s)? = arg else {
                throw TemplateSyntaxError(message: "filter '\(name)' needs a quoted string argument", offset: argAt)
            }
            return s
        }
        func needInt(default d: Int?) throws(TemplateSyntaxError) -> Int {
            switch arg {
            case .number(let n)? where n >= 0: return n
            case nil where d != nil: return d!
            default: throw TemplateSyntaxError(message: "filter '\(name)' needs a non-negative whole number", offset: argAt)
            }
        }
        func noArg() throws(TemplateSyntaxError) {
            if arg != nil { throw TemplateSyntaxError(message: "filter '\(name)' takes no argument", offset: argAt) }
        }
        switch name {
        case "default": return .default(try needString())
        case "mask": return .mask(try needInt(default: 4))
        case "upper": try noArg(); return .upper
        case "lower": try noArg(); return .lower
        case "truncate": return .truncate(try needInt(default: nil))
        case "date": return .date(try needString())
        case "count": try noArg(); return .count
        case "map": return .map(try needString())
        case "join": return .join(try needString())
        default:
            throw TemplateSyntaxError(
                message: "unknown filter '\(name)' (known: \(filterNames.joined(separator: ", ")))", offset: nameAt)
        }
    }
}

private struct TagScanner {
    enum Argument { case string(String), number(Int) }
    let chars: [Character]
    let base: Int
    var i = 0

    init(chars: [Character], base: Int) {
        self.chars = chars
        self.base = base
    }

    var position: Int { base + i }
    var atEnd: Bool { i >= chars.count }

    mutating func skipSpaces() {
        while i < chars.count, chars[i].isWhitespace { i += 1 }
    }

    mutating func consume(_ c: Character) -> Bool {
        guard i < chars.count, chars[i] == c else { return false }
        i += 1
        return true
    }

    mutating func identifier() -> String? {
        let start = i
        while i < chars.count, chars[i] == "_" || chars[i].isLetter || chars[i].isNumber { i += 1 }
        return i > start ? String(chars[start..<i]) : nil
    }

    mutating func path() -> String? {
        guard var p = identifier() else { return nil }
        while i < chars.count, chars[i] == "." {
            i += 1
            guard let next = identifier() else { return nil }
            p += "." + next
        }
        return p
    }

    mutating func argument() -> Argument? {
        guard i < chars.count else { return nil }
        let c = chars[i]
        if c == "'" || c == "\"" {
            i += 1
            let start = i
            while i < chars.count, chars[i] != c { i += 1 }
            guard i < chars.count else { return nil }
            let s = String(chars[start..<i])
            i += 1
            return .string(s)
        }
        let start = i
        while i < chars.count, chars[i].isASCII, chars[i].isNumber { i += 1 }
        guard i > start, let n = Int(String(chars[start..<i])) else { return nil }
        return .number(n)
    }
}

// MARK: - Rendering

extension Template {
    /// Renders against `root`, an object whose members are the template's roots
    /// (`event`, `user`, `rule`, `notification`, `items`). `timeZone` is the user's, for `date`.
    public func render(_ root: JSONValue, timeZone: String) throws(RenderError) -> String {
        try render(timeZone: { timeZone }) { components in
            var current = root
            for part in components {
                guard case .object(let object) = current, let next = object[part] else { return nil }
                current = next
            }
            return current
        }
    }

    /// Renders with `lookup` giving the value at a tag's path (its `components`), as
    /// `root[path:]` would: for callers that can resolve paths without building a root.
    /// `timeZone` is only asked for by a `date` filter.
    func render(timeZone: () -> String, lookup: ([String]) -> JSONValue?) throws(RenderError) -> String {
        var scratch: [UInt8] = []
        return try render(timeZone: timeZone, lookup: lookup, scratch: &scratch)
    }

    /// `scratch`: a buffer for the message's bytes, kept by a caller that renders many.
    func render(timeZone: () -> String, lookup: ([String]) -> JSONValue?,
                scratch out: inout [UInt8]) throws(RenderError) -> String {
        if parts.count == 1, case .text(let s) = parts[0] { return s }
        // The UTF-8 bytes first, then the string: appending bytes is a copy, appending to a
        // String costs several times more (flags, capacity and count checks per append).
        out.removeAll(keepingCapacity: true)
        out.reserveCapacity(source.utf8.count + 16)
        // The parts read in place through a span (iterating the array copies each part).
        let all = parts.span
        for i in all.indices {
            var piece: String
            switch all[i] {
            case .text(let s): piece = s
            case .tag(let tag): piece = try Template.render(tag, lookup(tag.components), timeZone: timeZone)
            }
            piece.withUTF8 { out.append(contentsOf: $0) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func render(_ tag: Tag, _ found: JSONValue?, timeZone: () -> String) throws(RenderError) -> String {
        var value = found
        if value?.isNull == true { value = nil }
        for filter in tag.filters {
            value = try apply(filter, value, path: tag.path, timeZone: timeZone)
        }
        guard let value else { throw .missingVariable(tag.path) }
        return text(of: value)
    }

    static func text(of value: JSONValue) -> String {
        switch value {
        case .string(let s): return s
        case .int(let i): return String(i)
        case .double(let d): return d.rounded() == d && abs(d) < 1e15 ? String(Int64(d)) : String(d)
        case .bool(let b): return b ? "true" : "false"
        case .null: return ""
        case .array, .object: return value.jsonString
        }
    }

    private static func apply(_ filter: Filter, _ value: JSONValue?, path: String, timeZone: () -> String) throws(RenderError) -> JSONValue? {
        if case .default(let fallback) = filter {
            return value ?? .string(fallback)
        }
        // Every other filter needs a value: a missing one stays missing and fails the render.
        guard let value else { return nil }
        switch filter {
        case .default: return value
        case .upper: return .string(text(of: value).uppercased())
        case .lower: return .string(text(of: value).lowercased())
        case .mask(let keep): return .string(mask(text(of: value), keep: keep))
        case .truncate(let n):
            let s = text(of: value)
            return .string(s.count <= n ? s : String(s.prefix(n)) + "…")
        case .date(let format):
            guard case .string(let s) = value, let t = Timestamp(rfc3339: s) else {
                throw .templateError("date: \(path) is not an RFC 3339 timestamp")
            }
            let zone = timeZone()
            guard let formatted = formatDate(t, format: format, timeZone: zone) else {
                throw .templateError("date: unknown time zone \(zone)")
            }
            return .string(formatted)
        case .count:
            switch value {
            case .array(let a): return .int(Int64(a.count))
            case .object(let o): return .int(Int64(o.count))
            case .string(let s): return .int(Int64(s.count))
            default: throw .templateError("count: \(path) is a \(value.typeName)")
            }
        case .map(let subpath):
            guard case .array(let a) = value else { throw .templateError("map: \(path) is not a list") }
            return .array(a.map { $0[path: subpath] ?? .null })
        case .join(let separator):
            guard case .array(let a) = value else { return value }
            return .string(a.filter { !$0.isNull }.map(text(of:)).joined(separator: separator))
        }
    }

    /// Keeps the first and last `keep` characters and stars the rest. A value too short to
    /// hide anything is starred entirely: a short code must never show in full.
    public static func mask(_ s: String, keep: Int) -> String {
        let chars = Array(s)
        guard chars.count > keep * 2 else { return String(repeating: "*", count: chars.count) }
        return String(chars.prefix(keep)) + String(repeating: "*", count: chars.count - 2 * keep) + String(chars.suffix(keep))
    }

    /// `yyyy`, `MM`, `dd`, `HH`, `mm`, `ss` in the given zone; other characters are literal.
    static func formatDate(_ t: Timestamp, format: String, timeZone: String) -> String? {
        guard let zone = TimeZone(identifier: timeZone) else { return nil }
        let date = Date(timeIntervalSince1970: Double(t.microseconds) / 1_000_000)
        let local = t.microseconds / 1_000_000 + Int64(zone.secondsFromGMT(for: date))
        let (days, secOfDay) = local.floorDivided(by: 86_400)
        let (y, m, d) = Timestamp.civilFromDays(Int(days))
        let s = Int(secOfDay)
        func pad(_ v: Int, _ w: Int) -> String {
            let t = String(v)
            return String(repeating: "0", count: max(0, w - t.count)) + t
        }
        var out = ""
        var rest = Substring(format)
        let tokens: [(String, String)] = [
            ("yyyy", pad(y, 4)), ("MM", pad(m, 2)), ("dd", pad(d, 2)),
            ("HH", pad(s / 3600, 2)), ("mm", pad(s / 60 % 60, 2)), ("ss", pad(s % 60, 2)),
        ]
        outer: while !rest.isEmpty {
            for (token, value) in tokens where rest.hasPrefix(token) {
                out += value
                rest = rest.dropFirst(token.count)
                continue outer
            }
            out.append(rest.removeFirst())
        }
        return out
    }
}
