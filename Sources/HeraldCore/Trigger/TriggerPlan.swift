/// What the trigger must keep, worked out once from the rules file: which counts, which
/// profile fields, and which event fields each rule's later rendering needs.
/// A class: every event's logic reads it, and a reference costs one retain, not one per field.
final class TriggerPlan: Sendable {
    /// `user.count(…)` patterns, in a fixed order; counts are kept per user in this order.
    let countedPatterns: [EventPattern]
    /// Profile fields rules or templates read (`user.nickname`), plus the ones shaping needs.
    let profileFields: Set<String>
    /// Per rule: the top-level event fields its templates, dedupe key and cancel match read.
    let eventFields: [Set<String>]
    /// The same as arrays: a few fields, compared faster than hashed.
    let eventFieldLists: [[String]]
    /// Fields any `cancel_on.match` compares.
    let matchFields: Set<String>
    /// Events that can cancel or convert a firing: cancel_on and goal events, and the `on`
    /// events of idle rules.
    let cancellingPatterns: [EventPattern]
    /// The same without idle rules' own events (`EventPlan.cancelsPending`).
    let pendingCancellingPatterns: [EventPattern]

    let rules: [Rule]
    /// The rules file's version hash, stored with every candidate.
    let version: String

    init(_ rules: RuleSet) {
        self.rules = rules.rules
        self.version = rules.version
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
        eventFieldLists = eventFields.map { $0.sorted() }
        matchFields = Set(rules.rules.flatMap { $0.cancel?.match.map { String($0.split(separator: ".")[0]) } ?? [] })
        var cancelling: [EventPattern] = []
        for rule in rules.rules {
            cancelling += rule.cancel?.events ?? []
            if let g = rule.goal { cancelling.append(g.event) }
        }
        pendingCancellingPatterns = cancelling
        for rule in rules.rules {
            if case .idle = rule.timing { cancelling += rule.on }
        }
        cancellingPatterns = cancelling
    }

    /// What an event of this kind touches; computed once per kind and cached by the engine.
    func eventPlan(topic: LogicalTopic, type: String) -> EventPlan {
        var listening: [Int] = [], resets: [Int] = [], goalOf: [Int] = []
        for (i, rule) in rules.enumerated() {
            if rule.on.contains(where: { $0.matches(topic: topic, type: type) }) { listening.append(i) }
            if case .threshold(_, _, let resetOn) = rule.timing, resetOn.contains(where: { $0.matches(topic: topic, type: type) }) {
                resets.append(i)
            }
            if rule.goal?.event.matches(topic: topic, type: type) == true { goalOf.append(i) }
        }
        return EventPlan(listening: listening,
                         counted: countedPatterns.indices.filter { countedPatterns[$0].matches(topic: topic, type: type) },
                         resets: resets,
                         cancelsOrConverts: cancellingPatterns.contains { $0.matches(topic: topic, type: type) },
                         cancelsPending: pendingCancellingPatterns.contains { $0.matches(topic: topic, type: type) },
                         goalOf: goalOf)
    }

    func countIndex(_ p: EventPattern) -> Int? { countedPatterns.firstIndex(of: p) }

    /// The part of an event a rule's firing carries.
    func trimmed(_ body: JSONObject, rule: Int) -> JSONObject {
        let keep = eventFieldLists[rule]
        if keep.isEmpty { return JSONObject() }
        var out = JSONObject()
        // By index: iterating the members copies every value, kept or not.
        for (i, k) in body.keys.enumerated() where keep.contains(k) { out[k] = body.values[i] }
        return out
    }
}
