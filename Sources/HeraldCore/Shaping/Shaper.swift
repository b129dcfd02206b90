/// Decisions for herald-shaper: candidates in, outcomes out (SPEC §6). Pure logic, shared
/// by the worker and `herald replay`.
public struct Shaper: Sendable {
    public let rules: RuleSet

    public init(rules: RuleSet) {
        self.rules = rules
    }

    /// Parts of a rules file this version validates but does not apply yet; workers and
    /// replay refuse such a file rather than ignore them.
    public static func unsupportedFeatures(_ rules: RuleSet) -> [String] {
        var out: [String] = []
        for rule in rules.rules {
            if rule.dedupe != nil { out.append("dedupe (rule \(rule.id))") }
            if rule.merge != nil { out.append("merge (rule \(rule.id))") }
        }
        if rules.policies != Policies() { out.append("policies") }
        if !rules.experiments.isEmpty { out.append("experiments") }
        return out
    }

    public mutating func process(_ candidate: Candidate) -> [Outcome] {
        [send(candidate, decidedAt: candidate.firedAt)]
    }

    /// Step 7: render and send; a render error makes the outcome `failed` with its reason.
    func send(_ c: Candidate, decidedAt: Timestamp) -> Outcome {
        var outcome = Outcome(candidate: c, status: .sent, reason: nil, decidedAt: decidedAt)
        if let failure = c.failure {
            outcome.status = .failed
            outcome.reason = failure
            return outcome
        }
        guard let template = rules.templates[c.template] else {
            outcome.status = .failed
            outcome.reason = RenderError.templateError("unknown template \(c.template)").reason
            return outcome
        }
        let root = JSONValue.object(JSONObject([
            ("event", .object(c.event)),
            ("user", .object(c.user)),
            ("rule", .object(JSONObject([("id", .string(c.ruleID))]))),
            ("notification", .object(JSONObject([
                ("id", .string(c.id)), ("priority", .string(c.priority.rawValue)),
                ("channels", .array(c.channels.map(JSONValue.string))),
            ]))),
        ]))
        let timeZone = c.user["timezone"]?.stringValue ?? rules.defaults.timezone
        do {
            outcome.title = try template.title?.render(root, timeZone: timeZone)
            outcome.body = try template.body.render(root, timeZone: timeZone)
            outcome.escalated = c.escalate
        } catch {
            outcome.status = .failed
            outcome.reason = error.reason
            outcome.title = nil
            outcome.body = nil
        }
        return outcome
    }
}
