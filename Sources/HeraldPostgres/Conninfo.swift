/// Finds password values in libpq connection strings, for redaction and error scrubbing.
///
/// Both forms that `PQconnectdb` accepts are handled:
/// - URL: `postgresql://user:PASSWORD@host/db?password=PASSWORD&sslpassword=PASSWORD`
/// - key/value: `host=h password=PASSWORD sslpassword='PASS WORD'`
///
/// The URL rule is deliberately greedy: the user-info ends at the *last* `@` of the string,
/// so passwords containing unencoded `@`, `/`, `?` or `:` are still hidden (at the cost of
/// over-redacting the rare URL that has an `@` in its path or query).
enum Conninfo {
    private static let urlPrefixes = ["postgresql://", "postgres://"]

    /// Whether `s` uses the URL form.
    static func isURL(_ s: some StringProtocol) -> Bool {
        let lower = s.prefix(13).lowercased()
        return urlPrefixes.contains { lower.hasPrefix($0) }
    }

    /// `conninfo` with every password value replaced by `***`.
    static func redact(_ conninfo: String) -> String {
        let bytes = Array(conninfo.utf8)
        let spans = secretSpans(bytes)
        guard !spans.isEmpty else { return conninfo }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var cursor = 0
        for span in spans {
            out.append(contentsOf: bytes[cursor..<span.lowerBound])
            out.append(contentsOf: Array("***".utf8))
            cursor = span.upperBound
        }
        out.append(contentsOf: bytes[cursor...])
        return String(decoding: out, as: UTF8.self)
    }

    /// The password texts in `conninfo`, as written and decoded (unquoted, unescaped,
    /// percent-decoded), longest first, for scrubbing messages that may echo them.
    static func secrets(_ conninfo: String) -> [String] {
        let bytes = Array(conninfo.utf8)
        var found = Set<String>()
        for span in secretSpans(bytes) {
            let raw = Array(bytes[span])
            found.insert(String(decoding: raw, as: UTF8.self))
            found.insert(String(decoding: unquote(raw), as: UTF8.self))
            found.insert(String(decoding: percentDecode(raw), as: UTF8.self))
        }
        found.remove("")
        return found.sorted { $0.count > $1.count }
    }

    /// Replaces every secret of `conninfo` in `text` by `***`, and redacts `conninfo` itself if echoed.
    static func scrub(_ text: String, secrets: [String]) -> String {
        var text = text
        for secret in secrets where text.contains(secret) {
            text = text.replacingAll(secret, with: "***")
        }
        return text
    }

    // MARK: - Parsing

    /// Byte ranges of password values, sorted and non-overlapping.
    static func secretSpans(_ bytes: [UInt8]) -> [Range<Int>] {
        let text = String(decoding: bytes, as: UTF8.self)
        let spans = isURL(text) ? urlSpans(bytes) : keyValueSpans(bytes)
        return merge(spans)
    }

    private static func isSecretKey(_ key: ArraySlice<UInt8>) -> Bool {
        String(decoding: key, as: UTF8.self).lowercased().hasSuffix("password")
    }

    private static func urlSpans(_ bytes: [UInt8]) -> [Range<Int>] {
        var spans: [Range<Int>] = []
        guard let schemeEnd = find(Array("://".utf8), in: bytes) else { return [] }
        let start = schemeEnd + 3
        // user:password@ — up to the last '@' (greedy on purpose, see the type comment).
        if let at = bytes.lastIndex(of: UInt8(ascii: "@")), at >= start,
           let colon = bytes[start..<at].firstIndex(of: UInt8(ascii: ":")) {
            spans.append((colon + 1)..<at)
        }
        // ?password=…&sslpassword=…
        if let q = bytes[start...].firstIndex(of: UInt8(ascii: "?")) {
            let end = bytes[q...].firstIndex(of: UInt8(ascii: "#")) ?? bytes.count
            var i = q + 1
            while i < end {
                let paramEnd = bytes[i..<end].firstIndex(of: UInt8(ascii: "&")) ?? end
                if let eq = bytes[i..<paramEnd].firstIndex(of: UInt8(ascii: "=")),
                   isSecretKey(bytes[i..<eq]) {
                    spans.append((eq + 1)..<paramEnd)
                }
                i = paramEnd + 1
            }
        }
        return spans
    }

    private static func isSpace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D || b == 0x0B || b == 0x0C
    }

    /// libpq `conninfo_parse` rules: `key = value`, value either `'quoted'` or bare up to
    /// whitespace; backslash escapes the next character in both.
    private static func keyValueSpans(_ bytes: [UInt8]) -> [Range<Int>] {
        var spans: [Range<Int>] = []
        var i = 0
        let n = bytes.count
        while i < n {
            while i < n, isSpace(bytes[i]) { i += 1 }
            let keyStart = i
            while i < n, bytes[i] != UInt8(ascii: "="), !isSpace(bytes[i]) { i += 1 }
            let key = bytes[keyStart..<i]
            while i < n, isSpace(bytes[i]) { i += 1 }
            guard i < n, bytes[i] == UInt8(ascii: "=") else { continue }
            i += 1
            while i < n, isSpace(bytes[i]) { i += 1 }
            let valueStart = i
            if i < n, bytes[i] == UInt8(ascii: "'") {
                i += 1
                while i < n, bytes[i] != UInt8(ascii: "'") {
                    i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
                }
                i = min(i + 1, n)  // closing quote (or end of an unterminated value)
            } else {
                while i < n, !isSpace(bytes[i]) {
                    i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1
                }
                i = min(i, n)
            }
            let valueSpan = valueStart..<i
            if isSecretKey(key) {
                if !valueSpan.isEmpty { spans.append(valueSpan) }
            } else if String(decoding: key, as: UTF8.self).lowercased() == "dbname" {
                // dbname may itself hold a connection string (expand_dbname).
                let inner = Array(unquote(Array(bytes[valueSpan])))
                if isURL(String(decoding: inner, as: UTF8.self)) || inner.contains(UInt8(ascii: "=")),
                   !secretSpans(inner).isEmpty {
                    spans.append(valueSpan)
                }
            }
        }
        return spans
    }

    private static func merge(_ spans: [Range<Int>]) -> [Range<Int>] {
        var merged: [Range<Int>] = []
        for span in spans.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, span.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, span.upperBound)
            } else {
                merged.append(span)
            }
        }
        return merged
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard needle.count <= haystack.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) {
            return i
        }
        return nil
    }

    private static func unquote(_ raw: [UInt8]) -> [UInt8] {
        var body = raw[...]
        if body.first == UInt8(ascii: "'") {
            body = body.dropFirst()
            if body.last == UInt8(ascii: "'") { body = body.dropLast() }
        }
        var out: [UInt8] = []
        var i = body.startIndex
        while i < body.endIndex {
            if body[i] == UInt8(ascii: "\\"), i + 1 < body.endIndex {
                out.append(body[i + 1])
                i += 2
            } else {
                out.append(body[i])
                i += 1
            }
        }
        return out
    }

    private static func percentDecode(_ raw: [UInt8]) -> [UInt8] {
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        var i = 0
        while i < raw.count {
            if raw[i] == UInt8(ascii: "%"), i + 2 < raw.count, let h = hex(raw[i + 1]), let l = hex(raw[i + 2]) {
                out.append(h << 4 | l)
                i += 3
            } else {
                out.append(raw[i])
                i += 1
            }
        }
        return out
    }
}

extension String {
    /// `replacingOccurrences(of:with:)` without Foundation.
    func replacingAll(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = self[...]
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        result += rest
        return result
    }
}
