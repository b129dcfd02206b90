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

    /// A rules file larger than this is refused before it is parsed (docs/decisions.md).
    public static let maxBytes = 4 << 20

    static let ruleKeys = ["id", "on", "where", "shops", "wait", "at", "cancel_on", "threshold", "idle", "repeat", "goal", "notify", "dedupe", "merge"]

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
                                rules: ctx.rules.map(\.rule), policies: ctx.policies ?? Policies(),
                                experiments: ctx.experiments.map(\.0), version: String(version.prefix(16))))
    }

    public static func load(yaml: String, path: String = "rules.yaml") -> Result<RuleSet, RulesError> {
        load([Source(path: path, contents: yaml)])
    }
}

private struct Context {
    var diagnostics: [RulesDiagnostic] = []
    var defaults: Defaults?
    var policies: Policies?
    var templates: [String: MessageTemplate] = [:]
    var templateMarks: [String: (String, Mark?)] = [:]
    var rules: [(rule: Rule, file: String)] = []
    /// (rule id, template name, where, file) for every template a rule names.
    var templateRefs: [(String, String, Mark?, String)] = []
    var experiments: [(Experiment, String, Mark?)] = []
    var ruleIDs: [String: String] = [:]
    var file = ""
    var lines: [Substring] = []
    var sourceLines: [String: [Substring]] = [:]

    mutating func error(_ mark: Mark?, _ message: String, columnOffset: Int = 0, in other: String? = nil) {
        let f = other ?? file
        let ls = other.flatMap { sourceLines[$0] } ?? lines
        let line = mark?.line ?? 1
        let column = (mark?.column ?? 1) + columnOffset
        let sourceLine = line - 1 < ls.count && line >= 1 ? String(ls[line - 1]) : nil
        diagnostics.append(RulesDiagnostic(file: f, line: line, column: column, message: message, sourceLine: sourceLine))
    }

    /// libyaml's own limit (MAX_NESTING_LEVEL), which Yams keeps.
    static let yamlMaxNesting = 1000

    /// The mark of the first node (in document order) that carries an anchor — an alias
    /// resolves to the anchored node, anchor included. Iterative, and it never descends
    /// into an anchored node, so it visits each written node at most once.
    static func firstAnchored(_ root: Node) -> Mark?? {
        var stack = [root]
        while let node = stack.popLast() {
            switch node {
            case .scalar(let s):
                if s.anchor != nil { return .some(s.mark) }
            case .sequence(let q):
                if q.anchor != nil { return .some(q.mark) }
                stack.append(contentsOf: q.reversed())
            case .mapping(let m):
                if m.anchor != nil { return .some(m.mark) }
                for pair in m.reversed() { stack.append(pair.value); stack.append(pair.key) }
            case .alias(let a):
                return .some(a.mark)
            }
        }
        return nil
    }

    mutating func read(_ source: RulesLoader.Source) {
        file = source.path
        lines = source.contents.split(separator: "\n", omittingEmptySubsequences: false)
        sourceLines[file] = lines
        let size = source.contents.utf8.count
        guard size <= RulesLoader.maxBytes else {
            error(nil, "the file is \(size) bytes; a rules file may have at most \(RulesLoader.maxBytes)")
            return
        }
        let root: Node?
        do {
            // The parser holds the anchors while the tree is checked for them (nodes refer to them weakly).
            let parser = try Parser(yaml: source.contents)
            root = try parser.singleRoot()
            if let root, let anchored = withExtendedLifetime(parser, { Self.firstAnchored(root) }) {
                error(anchored, "YAML anchors and aliases are not supported in rules files (an alias would let a small file expand without bound); write the value out")
                return
            }
        } catch let e as YamlError {
            switch e {
            case .scanner(_, let problem, let mark, _), .parser(_, let problem, let mark, _), .composer(_, let problem, let mark, _):
                if problem.contains("Maximum nesting level") {
                    error(mark, "invalid YAML: nested deeper than \(Self.yamlMaxNesting) levels")
                } else {
                    error(mark, "invalid YAML: \(problem)")
                }
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
            case "policies": readPolicies(value)
            case "experiments":
                guard case .sequence(let seq) = value else {
                    error(value.mark, "experiments must be a list")
                    continue
                }
                for item in seq { readExperiment(item) }
            default:
                error(keyNode.mark, "unknown key '\(key)' (expected version, defaults, templates, rules, policies, experiments)")
            }
        }
    }

    // MARK: Scalars

    mutating func mapping(_ node: Node, _ what: String) -> Node.Mapping? {
        guard case .mapping(let m) = node else {
            error(node.mark, "\(what) must be a mapping")
            return nil
        }
        return m
    }

    /// The mapping's entries by key, reporting unknown keys.
    mutating func fields(_ node: Node, _ what: String, allowed: [String]) -> [String: (key: Node, value: Node)]? {
        guard let m = mapping(node, what) else { return nil }
        var out: [String: (key: Node, value: Node)] = [:]
        for (k, v) in m {
            guard let name = k.scalar?.string else {
                error(k.mark, "keys must be plain names")
                continue
            }
            if !allowed.contains(name) {
                error(k.mark, "unknown key '\(name)' in \(what) (expected \(allowed.joined(separator: ", ")))")
                continue
            }
            out[name] = (k, v)
        }
        return out
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

    mutating func positiveInt(_ node: Node, _ what: String, allowZero: Bool = false) -> Int? {
        guard let s = node.scalar?.string, let n = Int(s), n > 0 || (allowZero && n == 0), n <= 1_000_000 else {
            error(node.mark, "\(what) must be a whole number from \(allowZero ? 0 : 1) to 1000000")
            return nil
        }
        return n
    }

    mutating func duration(_ node: Node, _ what: String, allowZero: Bool = false) -> TimeSpan? {
        guard let s = node.scalar?.string, let d = TimeSpan(parsing: s) else {
            error(node.mark, "\(what) must be a duration such as 90s, 5m, 1h30m or 3d")
            return nil
        }
        if d == .zero && !allowZero {
            error(node.mark, "\(what) must be longer than 0s")
            return nil
        }
        return d
    }

    mutating func patterns(_ node: Node, _ what: String) -> [EventPattern]? {
        guard let names = stringList(node, what) else { return nil }
        var out: [EventPattern] = []
        for name in names {
            guard let p = EventPattern(parsing: name) else {
                error(node.mark, "'\(name)' is not an event name: use orders.<type>, behavior.<type>, orders.*, behavior.* or *")
                return nil
            }
            out.append(p)
        }
        return out
    }

    /// Column shift from a scalar's mark to its first character (quotes).
    func quoteShift(_ node: Node) -> Int {
        switch node.scalar?.style {
        case .singleQuoted?, .doubleQuoted?: return 1
        default: return 0
        }
    }

    mutating func expression(_ node: Node, _ what: String, expecting: StaticType) -> Expression? {
        guard let text = string(node, what) else { return nil }
        do {
            return try ExpressionParser.parse(text, expecting: expecting)
        } catch {
            self.error(node.mark, "\(what): \(error.message)", columnOffset: quoteShift(node) + error.offset)
            return nil
        }
    }

    mutating func priorities(_ node: Node, _ what: String) -> Set<Priority>? {
        guard let names = stringList(node, what) else { return nil }
        var out = Set<Priority>()
        for n in names {
            guard let p = Priority(rawValue: n) else {
                error(node.mark, "\(what): '\(n)' is not one of urgent, high, normal, low")
                return nil
            }
            out.insert(p)
        }
        return out
    }

    // MARK: Sections

    mutating func readDefaults(_ node: Node) {
        guard let f = fields(node, "defaults", allowed: ["timezone", "channels"]) else { return }
        if defaults != nil { error(node.mark, "defaults are already set in another file") }
        var d = Defaults()
        if let v = f["timezone"]?.value, let tz = string(v, "defaults.timezone") {
            if TimeZone(identifier: tz) == nil {
                error(v.mark, "unknown time zone '\(tz)' (use an IANA name such as Asia/Shanghai)")
            }
            d.timezone = tz
        }
        if let v = f["channels"]?.value, let c = stringList(v, "defaults.channels") { d.channels = c }
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
            guard let f = fields(v, "template '\(name)'", allowed: ["title", "body"]) else { continue }
            let title = f["title"].flatMap { parseTemplate($0.value, "\(name).title") }
            guard let bodyNode = f["body"]?.value else {
                error(v.mark, "template '\(name)' has no body")
                continue
            }
            guard let body = parseTemplate(bodyNode, "\(name).body") else { continue }
            templates[name] = MessageTemplate(name: name, title: title, body: body)
        }
    }

    mutating func parseTemplate(_ node: Node, _ what: String) -> Template? {
        guard let text = string(node, what) else { return nil }
        let shift = quoteShift(node)
        do {
            let template = try Template(parsing: text)
            for part in template.parts {
                guard case .tag(let t) = part else { continue }
                let root = String(t.path.split(separator: ".").first ?? "")
                if !RulesLoader.templateRoots.contains(root) {
                    error(node.mark, "unknown variable '\(t.path)' in template \(what): variables start with event., user., rule., notification. or items",
                          columnOffset: shift + t.offset)
                }
            }
            return template
        } catch {
            self.error(node.mark, "template \(what): \(error.message)", columnOffset: shift + error.offset)
            return nil
        }
    }

    mutating func readPolicies(_ node: Node) {
        guard let f = fields(node, "policies", allowed: ["quiet_hours", "frequency_cap", "dedupe", "shops"]) else { return }
        if policies != nil { error(node.mark, "policies are already set in another file") }
        var p = Policies()
        p.quietHours = f["quiet_hours"].flatMap { readQuietHours($0.value, "policies.quiet_hours", inherit: nil) }
        p.frequencyCap = f["frequency_cap"].flatMap { readCap($0.value, "policies.frequency_cap", inherit: nil) }
        if let d = f["dedupe"]?.value, let df = fields(d, "policies.dedupe", allowed: ["window"]) {
            if let w = df["window"]?.value { p.dedupeWindow = duration(w, "policies.dedupe.window", allowZero: true) }
        }
        if let shopsNode = f["shops"]?.value, let shops = mapping(shopsNode, "policies.shops") {
            for (k, v) in shops {
                guard let shop = string(k, "a shop id"),
                      let sf = fields(v, "policies.shops.\(shop)", allowed: ["quiet_hours", "frequency_cap"]) else { continue }
                p.shops[shop] = Policies.ShopPolicies(
                    quietHours: sf["quiet_hours"].flatMap { readQuietHours($0.value, "policies.shops.\(shop).quiet_hours", inherit: p.quietHours) },
                    frequencyCap: sf["frequency_cap"].flatMap { readCap($0.value, "policies.shops.\(shop).frequency_cap", inherit: p.frequencyCap) })
            }
        }
        policies = p
    }

    /// A shop override inherits what it does not set (such as `bypass`) from the global policy.
    mutating func readQuietHours(_ node: Node, _ what: String, inherit: Policies.QuietHours?) -> Policies.QuietHours? {
        guard let f = fields(node, what, allowed: ["start", "end", "bypass"]) else { return nil }
        func clock(_ key: String) -> Int? {
            guard let v = f[key]?.value else {
                error(node.mark, "\(what) needs '\(key)' (HH:MM)")
                return nil
            }
            let parts = (v.scalar?.string ?? "").split(separator: ":")
            guard parts.count == 2, let h = Int(parts[0]), let m = Int(parts[1]), (0...23).contains(h), (0...59).contains(m),
                  parts[1].count == 2 else {
                error(v.mark, "\(what).\(key) must be a local time HH:MM such as 22:00")
                return nil
            }
            return h * 60 + m
        }
        guard let start = clock("start"), let end = clock("end") else { return nil }
        let bypass = f["bypass"].flatMap { priorities($0.value, "\(what).bypass") } ?? inherit?.bypass ?? []
        return Policies.QuietHours(start: start, end: end, bypass: bypass)
    }

    mutating func readCap(_ node: Node, _ what: String, inherit: Policies.FrequencyCap?) -> Policies.FrequencyCap? {
        guard let f = fields(node, what, allowed: ["max", "per", "bypass"]) else { return nil }
        guard let maxNode = f["max"]?.value, let max = positiveInt(maxNode, "\(what).max") else {
            if f["max"] == nil { error(node.mark, "\(what) needs 'max'") }
            return nil
        }
        guard let perNode = f["per"]?.value, let per = duration(perNode, "\(what).per") else {
            if f["per"] == nil { error(node.mark, "\(what) needs 'per'") }
            return nil
        }
        let bypass = f["bypass"].flatMap { priorities($0.value, "\(what).bypass") } ?? inherit?.bypass ?? []
        return Policies.FrequencyCap(max: max, per: per, bypass: bypass)
    }

    mutating func readExperiment(_ node: Node) {
        guard let f = fields(node, "an experiment", allowed: ["rule", "variants"]) else { return }
        guard let ruleNode = f["rule"]?.value, let rule = string(ruleNode, "experiment rule") else {
            if f["rule"] == nil { error(node.mark, "an experiment needs 'rule'") }
            return
        }
        guard let vNode = f["variants"]?.value, let vm = mapping(vNode, "experiment variants") else {
            if f["variants"] == nil { error(node.mark, "an experiment needs 'variants'") }
            return
        }
        var variants: [Experiment.Variant] = []
        for (k, v) in vm {
            guard let name = string(k, "a variant name"),
                  let vf = fields(v, "variant '\(name)'", allowed: ["template", "weight"]) else { continue }
            guard let tNode = vf["template"]?.value, let template = string(tNode, "variant template") else {
                if vf["template"] == nil { error(v.mark, "variant '\(name)' needs a template") }
                continue
            }
            let weight = vf["weight"].flatMap { positiveInt($0.value, "variant weight") } ?? 1
            variants.append(.init(name: name, template: template, weight: weight))
        }
        if variants.isEmpty { error(vNode.mark, "an experiment needs at least one variant") }
        experiments.append((Experiment(rule: rule, variants: variants), file, ruleNode.mark))
    }

    // MARK: Rules

    mutating func readRule(_ node: Node) {
        guard let f = fields(node, "a rule", allowed: RulesLoader.ruleKeys) else { return }
        var ok = true
        let idNode = f["id"]?.value
        if idNode == nil { error(node.mark, "a rule needs an id") }
        // Without a usable id the rest of the rule is still checked.
        guard let id = idNode.map({ string($0, "id") }) ?? "(rule at line \(node.mark?.line ?? 0))" else { return }
        if idNode == nil || id.isEmpty {
            ok = false
        } else if let other = ruleIDs[id] {
            error(idNode?.mark, "duplicate rule id '\(id)' (first defined in \(other))")
            ok = false
        } else {
            ruleIDs[id] = file
        }
        func need<T>(_ value: T?) -> T? {
            if value == nil { ok = false }
            return value
        }
        guard let onNode = f["on"]?.value else {
            error(node.mark, "rule '\(id)' needs 'on'")
            return
        }
        let on = need(patterns(onNode, "on")) ?? []
        let shops = f["shops"].flatMap { need(stringList($0.value, "shops")) }.map(Set.init)
        let condition = f["where"].flatMap { need(expression($0.value, "where", expecting: .bool)) }

        // Timing: at most one of wait, at, threshold, idle.
        let timingKeys = ["wait", "at", "threshold", "idle"].filter { f[$0] != nil }
        if timingKeys.count > 1 {
            error(f[timingKeys[1]]!.key.mark, "rule '\(id)' has both '\(timingKeys[0])' and '\(timingKeys[1])': use one of wait, at, threshold, idle")
            ok = false
        }
        var timing = Rule.Timing.immediate
        if let v = f["wait"]?.value, let d = need(duration(v, "wait")) { timing = .wait(d) }
        if let v = f["idle"]?.value, let d = need(duration(v, "idle")) { timing = .idle(d) }
        if let v = f["at"]?.value {
            var exprs: [Expression] = []
            if case .sequence(let seq) = v {
                for item in seq { if let e = need(expression(item, "at", expecting: .timestamp)) { exprs.append(e) } }
            } else if let e = need(expression(v, "at", expecting: .timestamp)) {
                exprs.append(e)
            }
            if exprs.isEmpty && ok { error(v.mark, "at needs at least one time"); ok = false }
            timing = .at(exprs)
        }
        if let v = f["threshold"]?.value, let tf = fields(v, "threshold", allowed: ["count", "within", "reset_on"]) {
            let count = tf["count"].flatMap { need(positiveInt($0.value, "threshold.count")) }
            let within = tf["within"].flatMap { need(duration($0.value, "threshold.within")) }
            let reset = tf["reset_on"].flatMap { need(patterns($0.value, "threshold.reset_on")) } ?? []
            if count == nil || within == nil {
                if tf["count"] == nil || tf["within"] == nil { error(v.mark, "threshold needs count and within") }
                ok = false
            } else {
                timing = .threshold(count: count!, within: within!, resetOn: reset)
            }
        }

        var cancel: Rule.Cancel?
        if let (k, v) = f["cancel_on"] {
            if case .mapping = v, let cf = fields(v, "cancel_on", allowed: ["events", "match"]) {
                let events = cf["events"].flatMap { need(patterns($0.value, "cancel_on.events")) }
                let match = cf["match"].flatMap { need(stringList($0.value, "cancel_on.match")) } ?? []
                if cf["events"] == nil { error(v.mark, "cancel_on needs events"); ok = false }
                for m in match where m.isEmpty || m.hasPrefix(".") || m.hasSuffix(".") || m.contains("..") {
                    error(cf["match"]?.value.mark, "cancel_on.match: '\(m)' is not a field path")
                    ok = false
                }
                if let events { cancel = Rule.Cancel(events: events, match: match) }
            } else if let events = need(patterns(v, "cancel_on")) {
                cancel = Rule.Cancel(events: events, match: [])
            }
            if f["repeat"] == nil {
                switch timing {
                case .immediate, .threshold, .idle:
                    error(k.mark, "cancel_on needs something to cancel: use it with wait, at or repeat")
                    ok = false
                default: break
                }
            }
        }
        var repeatEvery: Rule.Repeat?
        if let v = f["repeat"]?.value, let rf = fields(v, "repeat", allowed: ["every", "times"]) {
            let every = rf["every"].flatMap { need(duration($0.value, "repeat.every")) }
            let times = rf["times"].flatMap { need(positiveInt($0.value, "repeat.times")) }
            if rf["every"] == nil || rf["times"] == nil { error(v.mark, "repeat needs every and times"); ok = false }
            if let every, let times { repeatEvery = Rule.Repeat(every: every, times: times) }
        }
        var goal: Rule.Goal?
        if let v = f["goal"]?.value, let gf = fields(v, "goal", allowed: ["event", "within"]) {
            let event = gf["event"].flatMap { need(patterns($0.value, "goal.event")) }
            let within = gf["within"].flatMap { need(duration($0.value, "goal.within")) }
            if gf["event"] == nil || gf["within"] == nil { error(v.mark, "goal needs event and within"); ok = false }
            if let event, event.count != 1 { error(gf["event"]!.value.mark, "goal.event is one event name"); ok = false }
            if let event, let within, event.count == 1 { goal = Rule.Goal(event: event[0], within: within) }
        }
        var refs: [(String, Mark?)] = []
        guard let notifyNode = f["notify"]?.value else {
            error(node.mark, "rule '\(id)' needs 'notify'")
            return
        }
        let notify = need(readNotify(notifyNode, &refs))
        var dedupe: Rule.Dedupe?
        if let v = f["dedupe"]?.value, let df = fields(v, "dedupe", allowed: ["window", "key"]) {
            let window = df["window"].flatMap { need(duration($0.value, "dedupe.window", allowZero: true)) }
            let key = df["key"].flatMap { need(parseTemplate($0.value, "dedupe.key")) }
            if df["window"] == nil { error(v.mark, "dedupe needs a window"); ok = false }
            if let window { dedupe = Rule.Dedupe(window: window, key: key) }
        }
        var merge: Rule.Merge?
        if let v = f["merge"]?.value, let mf = fields(v, "merge", allowed: ["window", "template"]) {
            let window = mf["window"].flatMap { need(duration($0.value, "merge.window")) }
            let template = mf["template"].flatMap { need(string($0.value, "merge.template")) }
            if mf["window"] == nil || mf["template"] == nil { error(v.mark, "merge needs window and template"); ok = false }
            if let template { refs.append((template, mf["template"]!.value.mark)) }
            if let window, let template { merge = Rule.Merge(window: window, template: template) }
        }
        // Template references are checked even when the rule has other errors.
        templateRefs += refs.map { (id, $0.0, $0.1, file) }
        guard ok, let notify else { return }
        rules.append((Rule(id: id, on: on, shops: shops, condition: condition, timing: timing, cancel: cancel,
                           repeatEvery: repeatEvery, goal: goal, notify: notify, dedupe: dedupe, merge: merge), file))
    }

    mutating func readNotify(_ node: Node, _ refs: inout [(String, Mark?)]) -> Notify? {
        guard let f = fields(node, "notify", allowed: ["template", "channels", "priority", "escalate", "tags"]) else { return nil }
        guard let tNode = f["template"]?.value, let template = string(tNode, "notify.template") else {
            if f["template"] == nil { error(node.mark, "notify needs a template") }
            return nil
        }
        refs.append((template, tNode.mark))
        var ok = true
        let channels = f["channels"].flatMap { stringList($0.value, "notify.channels") } ?? []
        var priority = Priority.normal
        if let v = f["priority"]?.value {
            if let p = v.scalar.flatMap({ Priority(rawValue: $0.string) }) {
                priority = p
            } else {
                error(v.mark, "priority must be one of urgent, high, normal, low")
                ok = false
            }
        }
        var escalate = false
        if let v = f["escalate"]?.value { if let b = bool(v, "notify.escalate") { escalate = b } else { ok = false } }
        var tags: [String] = []
        if let v = f["tags"]?.value { if let t = stringList(v, "notify.tags") { tags = t } else { ok = false } }
        guard ok else { return nil }
        // An empty channel list falls back to the defaults once every file is read.
        return Notify(template: template, channels: channels, priority: priority, escalate: escalate, tags: tags)
    }

    /// Checks that need every file read: template references, experiments, default channels.
    mutating func crossCheck() {
        let channels = (defaults ?? Defaults()).channels
        for (rule, name, mark, refFile) in templateRefs where templates[name] == nil && templateMarks[name] == nil {
            error(mark, "rule '\(rule)' uses unknown template '\(name)'", in: refFile)
        }
        for i in rules.indices where rules[i].rule.notify.channels.isEmpty {
            rules[i].rule.notify.channels = channels
        }
        var seen = Set<String>()
        for (experiment, expFile, mark) in experiments {
            if !rules.contains(where: { $0.rule.id == experiment.rule }) {
                error(mark, "experiment for unknown rule '\(experiment.rule)'", in: expFile)
            }
            if !seen.insert(experiment.rule).inserted {
                error(mark, "rule '\(experiment.rule)' has more than one experiment", in: expFile)
            }
            for v in experiment.variants where templates[v.template] == nil && templateMarks[v.template] == nil {
                error(mark, "experiment variant '\(v.name)' uses unknown template '\(v.template)'", in: expFile)
            }
        }
    }
}
