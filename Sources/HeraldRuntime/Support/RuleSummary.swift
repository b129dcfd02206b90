import HeraldCore

/// One line per rule for `herald rules check`.
public enum RuleSummary {
    public static func describe(_ rule: Rule) -> String {
        var parts = ["on " + rule.on.map(\.description).joined(separator: ", ")]
        if let shops = rule.shops { parts.append("shops " + shops.sorted().joined(separator: ",")) }
        if rule.condition != nil { parts.append("where …") }
        switch rule.timing {
        case .immediate: break
        case .wait(let d): parts.append("wait \(d)")
        case .at(let list): parts.append("at \(list.count) time\(list.count == 1 ? "" : "s")")
        case .threshold(let count, let within, let reset):
            parts.append("\(count) within \(within)" + (reset.isEmpty ? "" : ", reset on \(reset.map(\.description).joined(separator: ", "))"))
        case .idle(let d): parts.append("idle \(d)")
        }
        if let c = rule.cancel {
            parts.append("cancel on \(c.events.map(\.description).joined(separator: ", "))" + (c.match.isEmpty ? "" : " matching \(c.match.joined(separator: ","))"))
        }
        if let r = rule.repeatEvery { parts.append("repeat every \(r.every) ×\(r.times)") }
        if let g = rule.goal { parts.append("goal \(g.event) within \(g.within)") }
        if let d = rule.dedupe { parts.append("dedupe \(d.window)") }
        if let m = rule.merge { parts.append("merge \(m.window) → \(m.template)") }
        return parts.joined(separator: "; ") + " → \(rule.notify.template) [\(rule.notify.priority.rawValue)]"
    }
}
