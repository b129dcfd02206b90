import Foundation
import Yams

/// One problem in a rules file, with where it is.
public struct RulesDiagnostic: Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String
    /// The offending source line, when known, for a caret display.
    public var sourceLine: String?

    public var description: String {
        var s = "\(file):\(line):\(column): error: \(message)"
        if let sourceLine {
            s += "\n    \(sourceLine)\n    \(String(repeating: " ", count: max(0, column - 1)))^"
        }
        return s
    }
}

public struct RulesError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [RulesDiagnostic]
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Loads and validates rules files (SPEC §3). Every problem is reported, not just the first.
public enum RulesLoader {
    public struct Source: Sendable {
        public var path: String
        public var contents: String
        public init(path: String, contents: String) {
            self.path = path
            self.contents = contents
        }
    }

    /// Template roots a message template may read.
    static let templateRoots: Set<String> = ["event", "user", "rule", "notification", "items"]

    /// Keys the rules language defines but this version does not implement yet; a file
    /// using them is refused rather than run with the feature silently ignored.
    static let unsupportedRuleKeys: Set<String> = ["where", "wait", "at", "cancel_on", "threshold", "idle", "repeat", "goal", "dedupe", "merge"]
    static let unsupportedTopKeys: Set<String> = ["policies", "experiments"]

    public static func load(_ sources: [Source]) -> Result<RuleSet, RulesError> {
        var ctx = Context()
        for source in sources {
            ctx.read(source)
        }
        if sources.isEmpty {
            ctx.diagnostics.append(RulesDiagnostic(file: "<rules>", line: 1, column: 1, message: "no rules files given", sourceLine: nil))
        }
        ctx.crossCheck()
        if !ctx.diagnostics.isEmpty { return .failure(RulesError(diagnostics: ctx.diagnostics)) }
        let version = StableID.make(sources.sorted { $0.path < $1.path }.flatMap { [$0.path.split(separator: "/").last.map(String.init) ?? $0.path, $0.contents] })
        return .success(RuleSet(defaults: ctx.defaults ?? Defaults(), templates: ctx.templates,
                                rules: ctx.rules.map(\.rule), version: String(version.prefix(16))))
    }

    public static func load(yaml: String, path: String = "rules.yaml") -> Result<RuleSet, RulesError> {
        load([Source(path: path, contents: yaml)])
    }
}

private struct Context {
    var diagnostics: [RulesDiagnostic] = []
    var defaults: Defaults?
    var templates: [String: MessageTemplate] = [:]
    var templateMarks: [String: (String, Mark?)] = [:]
    var rules: [(rule: Rule, file: String, templateMark: Mark?)] = []
    var ruleIDs: [String: String] = [:]
    var file = ""
    var lines: [Substring] = []

    mutating func error(_ mark: Mark?, _ message: String, columnOffset: Int = 0) {
        let line = mark?.line ?? 1
        let column = (mark?.column ?? 1) + columnOffset
        let sourceLine = line - 1 < lines.count && line >= 1 ? String(lines[line - 1]) : nil
        diagnostics.append(RulesDiagnostic(file: file, line: line, column: column, message: message, sourceLine: sourceLine))
    }

    mutating func read(_ source: RulesLoader.Source) {
        file = source.path
        lines = source.contents.split(separator: "\n", omittingEmptySubsequences: false)
        let root: Node?
        do {
            root = try Yams.compose(yaml: source.contents)
        } catch let e as YamlError {
            switch e {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                error(mark, "invalid YAML: \(problem)")
            default:
                error(nil, "invalid YAML: \(e)")
            }
            return
        } catch {
            self.error(nil, "invalid YAML: \(error)")
            return
        }
        guard let root else {
            error(nil, "the file is empty")
            return
        }
        guard let top = mapping(root, "the rules file") else { return }
        for (keyNode, value) in top {
            guard let key = keyNode.scalar?.string else {
                error(keyNode.mark, "keys must be plain names")
                continue
            }
            switch key {
            case "version":
                if value.scalar?.string != "1" { error(value.mark, "version must be 1") }
            case "defaults": readDefaults(value)
            case "templates": readTemplates(value)
            case "rules":
                guard case .sequence(let seq) = value else {
                    error(value.mark, "rules must be a list")
                    continue
                }
                for item in seq { readRule(item) }
            case _ where RulesLoader.unsupportedTopKeys.contains(key):
                error(keyNode.mark, "'\(key)' is not supported by this version of Herald yet")
            default:
                error(keyNode.mark, "unknown key '\(key)' (expected version, defaults, templates, rules, policies, experiments)")
            }
        }
    }

    mutating func mapping(_ node: Node, _ what: String) -> Node.Mapping? {
        guard case .mapping(let m) = node else {
            error(node.mark, "\(what) must be a mapping")
            return nil
        }
        return m
    }

    mutating func string(_ node: Node, _ what: String) -> String? {
        guard case .scalar(let s) = node, !s.string.isEmpty else {
            error(node.mark, "\(what) must be a non-empty string")
            return nil
        }
        return s.string
    }

    mutating func stringList(_ node: Node, _ what: String) -> [String]? {
        if case .scalar = node { return string(node, what).map { [$0] } }
        guard case .sequence(let seq) = node else {
            error(node.mark, "\(what) must be a string or a list of strings")
            return nil
        }
        var out: [String] = []
        for item in seq {
            guard let s = string(item, "each entry of \(what)") else { return nil }
            out.append(s)
        }
        return out
    }

    mutating func bool(_ node: Node, _ what: String) -> Bool? {
        switch node.scalar?.string {
        case "true": return true
        case "false": return false
        default:
            error(node.mark, "\(what) must be true or false")
            return nil
        }
    }

    mutating func readDefaults(_ node: Node) {
        guard let m = mapping(node, "defaults") else { return }
        if defaults != nil { error(node.mark, "defaults are already set in another file") }
        var d = Defaults()
        for (k, v) in m {
            switch k.scalar?.string {
            case "timezone":
                if let tz = string(v, "defaults.timezone") {
                    if TimeZone(identifier: tz) == nil {
                        error(v.mark, "unknown time zone '\(tz)' (use an IANA name such as Asia/Shanghai)")
                    }
                    d.timezone = tz
                }
            case "channels":
                if let c = stringList(v, "defaults.channels") { d.channels = c }
            default:
                error(k.mark, "unknown key '\(k.scalar?.string ?? "?")' in defaults (expected timezone, channels)")
            }
        }
        defaults = d
    }

    mutating func readTemplates(_ node: Node) {
        guard let m = mapping(node, "templates") else { return }
        for (k, v) in m {
            guard let name = string(k, "a template name") else { continue }
            if let (other, _) = templateMarks[name] {
                error(k.mark, "template '\(name)' is already defined in \(other)")
                continue
            }
            templateMarks[name] = (file, k.mark)
            guard let fields = mapping(v, "template '\(name)'") else { continue }
            var title: Template?
            var body: Template?
            for (fk, fv) in fields {
                switch fk.scalar?.string {
                case "title": title = parseTemplate(fv, "\(name).title")
                case "body": body = parseTemplate(fv, "\(name).body")
                default: error(fk.mark, "unknown key '\(fk.scalar?.string ?? "?")' in template '\(name)' (expected title, body)")
                }
            }
            guard let body else {
                if fields.first(where: { $0.key.scalar?.string == "body" }) == nil {
                    error(v.mark, "template '\(name)' has no body")
                }
                continue
            }
            templates[name] = MessageTemplate(name: name, title: title, body: body)
        }
    }

    mutating func parseTemplate(_ node: Node, _ what: String) -> Template? {
        guard let text = string(node, what) else { return nil }
        // Columns are exact for plain and single-line quoted scalars, which is what templates are.
        let quoteShift: Int
        switch node.scalar?.style {
        case .singleQuoted?, .doubleQuoted?: quoteShift = 1
        default: quoteShift = 0
        }
        do {
            let template = try Template(parsing: text)
            for path in template.paths {
                let root = String(path.split(separator: ".").first ?? "")
                if !RulesLoader.templateRoots.contains(root) {
                    let offset = template.parts.compactMap { part -> Int? in
                        if case .tag(let t) = part, t.path == path { return t.offset } else { return nil }
                    }.first ?? 0
                    error(node.mark, "unknown variable '\(path)' in template \(what): variables start with event., user., rule., notification. or items",
                          columnOffset: quoteShift + offset)
                }
            }
            return template
        } catch {
            self.error(node.mark, "template \(what): \(error.message)", columnOffset: quoteShift + error.offset)
            return nil
        }
    }

    mutating func readRule(_ node: Node) {
        guard let m = mapping(node, "a rule") else { return }
        var id: String?
        var on: [EventPattern]?
        var shops: Set<String>?
        var notify: (Notify, Mark?)?
        for (k, v) in m {
            guard let key = k.scalar?.string else {
                error(k.mark, "keys must be plain names")
                continue
            }
            switch key {
            case "id":
                id = string(v, "id")
            case "on":
                guard let names = stringList(v, "on") else { continue }
                var patterns: [EventPattern] = []
                for name in names {
                    if let p = EventPattern(parsing: name) {
                        patterns.append(p)
                    } else {
                        error(v.mark, "'\(name)' is not an event name: use orders.<type>, behavior.<type>, orders.*, behavior.* or *")
                    }
                }
                on = patterns
            case "shops":
                if let list = stringList(v, "shops") { shops = Set(list) }
            case "notify":
                notify = readNotify(v)
            case _ where RulesLoader.unsupportedRuleKeys.contains(key):
                error(k.mark, "'\(key)' is not supported by this version of Herald yet")
            default:
                error(k.mark, "unknown key '\(key)' in a rule (expected id, on, where, shops, wait, at, cancel_on, threshold, idle, repeat, goal, notify, dedupe, merge)")
            }
        }
        guard let id else {
            if m.first(where: { $0.key.scalar?.string == "id" }) == nil { error(node.mark, "a rule needs an id") }
            return
        }
        if let other = ruleIDs[id] {
            error(m.first { $0.key.scalar?.string == "id" }?.value.mark, "duplicate rule id '\(id)' (first defined in \(other))")
            return
        }
        ruleIDs[id] = file
        guard let on else {
            if m.first(where: { $0.key.scalar?.string == "on" }) == nil { error(node.mark, "rule '\(id)' needs 'on'") }
            return
        }
        guard let (n, mark) = notify else {
            if m.first(where: { $0.key.scalar?.string == "notify" }) == nil { error(node.mark, "rule '\(id)' needs 'notify'") }
            return
        }
        rules.append((Rule(id: id, on: on, shops: shops, notify: n), file, mark))
    }

    mutating func readNotify(_ node: Node) -> (Notify, Mark?)? {
        guard let m = mapping(node, "notify") else { return nil }
        var template: String?
        var templateMark: Mark?
        var channels: [String]?
        var priority = Priority.normal
        var escalate = false
        var tags: [String] = []
        var ok = true
        for (k, v) in m {
            switch k.scalar?.string {
            case "template":
                template = string(v, "notify.template")
                templateMark = v.mark
            case "channels":
                channels = stringList(v, "notify.channels")
            case "priority":
                if let p = v.scalar.flatMap({ Priority(rawValue: $0.string) }) {
                    priority = p
                } else {
                    error(v.mark, "priority must be one of urgent, high, normal, low")
                    ok = false
                }
            case "escalate":
                if let b = bool(v, "notify.escalate") { escalate = b } else { ok = false }
            case "tags":
                if let t = stringList(v, "notify.tags") { tags = t } else { ok = false }
            default:
                error(k.mark, "unknown key '\(k.scalar?.string ?? "?")' in notify (expected template, channels, priority, escalate, tags)")
                ok = false
            }
        }
        guard let template else {
            if m.first(where: { $0.key.scalar?.string == "template" }) == nil { error(node.mark, "notify needs a template") }
            return nil
        }
        guard ok else { return nil }
        // An empty channel list falls back to the defaults when the rule set is complete.
        return (Notify(template: template, channels: channels ?? [], priority: priority, escalate: escalate, tags: tags), templateMark)
    }

    /// Checks that need every file read: template references and default channels.
    mutating func crossCheck() {
        let channels = (defaults ?? Defaults()).channels
        for i in rules.indices {
            let (rule, ruleFile, mark) = rules[i]
            if templates[rule.notify.template] == nil && templateMarks[rule.notify.template] == nil {
                file = ruleFile
                diagnostics.append(RulesDiagnostic(
                    file: ruleFile, line: mark?.line ?? 1, column: mark?.column ?? 1,
                    message: "rule '\(rule.id)' uses unknown template '\(rule.notify.template)'", sourceLine: nil))
            }
            if rule.notify.channels.isEmpty { rules[i].rule.notify.channels = channels }
        }
    }
}
