/// What the trigger must keep, worked out once from the rules file: which counts, which
/// profile fields, and which event fields each rule's later rendering needs.
struct TriggerPlan: Sendable {
    /// `user.count(…)` patterns, in a fixed order; counts are kept per user in this order.
    let countedPatterns: [EventPattern]
    /// Profile fields rules or templates read (`user.nickname`), plus the ones shaping needs.
    let profileFields: Set<String>
    /// Per rule: the top-level event fields its templates, dedupe key and cancel match read.
    let eventFields: [Set<String>]
    /// Fields any `cancel_on.match` compares.
    let matchFields: Set<String>
    /// Events that can cancel or convert a firing: cancel_on and goal events, and the `on`
    /// events of idle rules.
    let cancellingPatterns: [EventPattern]

    init(_ rules: RuleSet) {
        var counted: [EventPattern] = []
        var profile: Set<String> = ["timezone", "locale"]
        var eventFields: [Set<String>] = []
        func note(_ path: String, _ fields: inout Set<String>) {
            let parts = path.split(separator: ".")
            guard parts.count >= 2 else { return }
            switch parts[0] {
            case "event": fields.insert(String(parts[1]))
            case "user" where parts[1] != "first_seen" && parts[1] != "last_seen": profile.insert(String(parts[1]))
            default: break
            }
        }
        func templatePaths(_ t: Template) -> [String] {
            var out: [String] = []
            for part in t.parts {
                guard case .tag(let tag) = part else { continue }
                out.append(tag.path)
                for f in tag.filters {
                    // A digest's `items | map: 'event.status'` reads each member's event.
                    if case .map(let sub) = f { out.append(sub) }
                }
            }
            return out
        }
        for rule in rules.rules {
            var fields: Set<String> = []
            var exprs: [Expression] = rule.condition.map { [$0] } ?? []
            if case .at(let list) = rule.timing { exprs += list }
            for e in exprs {
                for p in e.countedPatterns where !counted.contains(p) { counted.append(p) }
                var ignored: Set<String> = []
                for path in e.paths { note(path, &ignored) }
            }
            var templateNames = [rule.notify.template]
            if let m = rule.merge { templateNames.append(m.template) }
            for ex in rules.experiments where ex.rule == rule.id { templateNames += ex.variants.map(\.template) }
            for name in templateNames {
                guard let t = rules.templates[name] else { continue }
                for path in (t.title.map(templatePaths) ?? []) + templatePaths(t.body) { note(path, &fields) }
            }
            if let key = rule.dedupe?.key { for path in templatePaths(key) { note(path, &fields) } }
            for m in rule.cancel?.match ?? [] { fields.insert(String(m.split(separator: ".")[0])) }
            eventFields.append(fields)
        }
        countedPatterns = counted
        profileFields = profile
        self.eventFields = eventFields
        matchFields = Set(rules.rules.flatMap { $0.cancel?.match.map { String($0.split(separator: ".")[0]) } ?? [] })
        var cancelling: [EventPattern] = []
        for rule in rules.rules {
            cancelling += rule.cancel?.events ?? []
            if let g = rule.goal { cancelling.append(g.event) }
            if case .idle = rule.timing { cancelling += rule.on }
        }
        cancellingPatterns = cancelling
    }

    func keepsAhead(_ event: Event) -> Bool {
        cancellingPatterns.contains { $0.matches(event) }
    }

    func countIndex(_ p: EventPattern) -> Int? { countedPatterns.firstIndex(of: p) }

    /// The part of an event a rule's firing carries.
    func trimmed(_ body: JSONObject, rule: Int) -> JSONObject {
        let keep = eventFields[rule]
        var out = JSONObject()
        for (k, v) in body.members where keep.contains(k) { out[k] = v }
        return out
    }
}
