/// Rule evaluation for herald-trigger: events in, candidates out. Pure logic, so the
/// worker, `herald replay` and the tests run the very same code.
public struct TriggerEngine: Sendable {
    public let rules: RuleSet

    public init(rules: RuleSet) {
        self.rules = rules
    }

    /// The candidates `event` fires, in rule order.
    public mutating func process(_ event: Event) -> [Candidate] {
        var out: [Candidate] = []
        for rule in rules.rules where rule.applies(to: event) {
            out.append(candidate(rule, event, firedAt: event.occurredAt, ordinal: 0))
        }
        return out
    }

    func candidate(_ rule: Rule, _ event: Event, firedAt: Timestamp, ordinal: Int) -> Candidate {
        Candidate(
            id: Candidate.notificationID(ruleID: rule.id, shopID: event.shopID, userID: event.userID,
                                         triggerEventID: event.eventID, ordinal: ordinal),
            ruleID: rule.id, shopID: event.shopID, userID: event.userID, priority: rule.notify.priority,
            channels: rule.notify.channels, template: rule.notify.template, escalate: rule.notify.escalate,
            tags: rule.notify.tags, triggerEventIDs: [event.eventID], eventTime: event.occurredAt,
            firedAt: firedAt, rulesVersion: rules.version, event: event.body, user: JSONObject())
    }
}
