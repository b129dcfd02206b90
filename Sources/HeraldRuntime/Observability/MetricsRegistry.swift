import Foundation
import Synchronization

/// Counters, gauges and histograms with labels, rendered in the Prometheus text format
/// (version 0.0.4). Small on purpose: a worker has a dozen families, and owning the
/// format keeps swift-prometheus and swift-metrics out of the build (docs/decisions.md).
public final class MetricsRegistry: Sendable {
    public enum Kind: String, Sendable { case counter, gauge, histogram }

    struct Family {
        var kind: Kind
        var help: String
        var labelNames: [String]
        var buckets: [Double]
        /// Label values → value (counter, gauge) or bucket counts + sum + count (histogram).
        var values: [[String]: Double] = [:]
        var histograms: [[String]: Histogram] = [:]
    }

    struct Histogram {
        var counts: [UInt64]
        var sum = 0.0
        var count: UInt64 = 0

        mutating func record(_ values: some Sequence<Double>, buckets: [Double]) {
            for value in values {
                for (i, bound) in buckets.enumerated() where value <= bound { counts[i] += 1 }
                sum += value
                count += 1
            }
        }
    }

    private let state = Mutex<(order: [String], families: [String: Family])>(([], [:]))

    public init() {}

    /// Declares a family; declaring it again with the same shape is a no-op.
    public func declare(_ name: String, _ kind: Kind, help: String, labels: [String] = [], buckets: [Double] = []) {
        state.withLock { s in
            guard s.families[name] == nil else { return }
            s.order.append(name)
            s.families[name] = Family(kind: kind, help: help, labelNames: labels, buckets: buckets.sorted())
        }
    }

    public func increment(_ name: String, _ labels: [String] = [], by amount: Double = 1) {
        state.withLock { s in s.families[name]?.values[labels, default: 0] += amount }
    }

    public func set(_ name: String, _ labels: [String] = [], to value: Double) {
        state.withLock { s in s.families[name]?.values[labels] = value }
    }

    /// Replaces every series of a gauge family at once (lag per partition after a rebalance).
    public func replace(_ name: String, with series: [[String]: Double]) {
        state.withLock { s in s.families[name]?.values = series }
    }

    public func observe(_ name: String, _ labels: [String] = [], value: Double) {
        observe(name, labels, values: CollectionOfOne(value))
    }

    /// Several observations of one series under one lock, changed in place (a copy of the
    /// family per observation cost herald-sink a few percent of its CPU).
    public func observe(_ name: String, _ labels: [String] = [], values: some Sequence<Double>) {
        state.withLock { s in
            guard let buckets = s.families[name]?.buckets else { return }
            s.families[name]!.histograms[labels, default: Histogram(counts: Array(repeating: 0, count: buckets.count))]
                .record(values, buckets: buckets)
        }
    }

    /// The current value of a counter or gauge series (tests, `herald dev`).
    public func value(_ name: String, _ labels: [String] = []) -> Double? {
        state.withLock { s in s.families[name]?.values[labels] }
    }

    /// The Prometheus text exposition of every family.
    public func render() -> String {
        state.withLock { s in
            var out = ""
            for name in s.order {
                guard let f = s.families[name] else { continue }
                out += "# HELP \(name) \(f.help)\n# TYPE \(name) \(f.kind.rawValue)\n"
                if f.kind == .histogram {
                    for labels in f.histograms.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                        let h = f.histograms[labels]!
                        let base = zip(f.labelNames, labels).map { ($0, $1) }
                        for (i, bound) in f.buckets.enumerated() {
                            out += "\(name)_bucket\(Self.labels(base + [("le", Self.number(bound))])) \(h.counts[i])\n"
                        }
                        out += "\(name)_bucket\(Self.labels(base + [("le", "+Inf")])) \(h.count)\n"
                        out += "\(name)_sum\(Self.labels(base)) \(Self.number(h.sum))\n"
                        out += "\(name)_count\(Self.labels(base)) \(h.count)\n"
                    }
                } else {
                    for labels in f.values.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                        out += "\(name)\(Self.labels(Array(zip(f.labelNames, labels)))) \(Self.number(f.values[labels]!))\n"
                    }
                }
            }
            return out
        }
    }

    static func labels(_ pairs: [(String, String)]) -> String {
        guard !pairs.isEmpty else { return "" }
        return "{" + pairs.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    static func number(_ v: Double) -> String {
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }
}
