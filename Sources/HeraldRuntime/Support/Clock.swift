import CMalloc
import Foundation
import HeraldCore

extension Timestamp {
    /// The wall clock, to the microsecond.
    public static var now: Timestamp {
        Timestamp(microseconds: Int64((Date().timeIntervalSince1970 * 1_000_000).rounded()))
    }
}

/// Resident memory of a process (Linux /proc), for benchmarks and the soak.
public enum ProcessMemory {
    /// VmRSS of `pid`, or of this process when nil; 0 when it cannot be read.
    public static func residentBytes(pid: Int32? = nil) -> Int {
        statusKiB("VmRSS:", pid: pid) * 1024
    }

    /// VmHWM (the peak of VmRSS since the process started) of `pid`, or of this process.
    public static func peakResidentBytes(pid: Int32? = nil) -> Int {
        statusKiB("VmHWM:", pid: pid) * 1024
    }

    private static func statusKiB(_ field: String, pid: Int32?) -> Int {
        let path = "/proc/\(pid.map(String.init) ?? "self")/status"
        guard let s = try? String(contentsOfFile: path, encoding: .utf8) else { return 0 }
        for line in s.split(separator: "\n") where line.hasPrefix(field) {
            return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
        }
        return 0
    }

    /// Gives the memory the allocator holds free back to the system (glibc's `malloc_trim`;
    /// nothing elsewhere). glibc keeps freed blocks resident for reuse — the old copies of
    /// arrays that grew, a checkpoint's encoded rows, librdkafka's fetch buffers — so a
    /// worker's RSS would otherwise include whatever it once had free at the same time.
    /// Takes a few milliseconds per hundred MiB of heap (docs/performance.md, "State size
    /// on the worker"). True when some memory was returned.
    @discardableResult
    public static func returnFreedMemory() -> Bool {
        herald_malloc_trim() != 0
    }
}
