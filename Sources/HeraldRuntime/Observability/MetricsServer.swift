import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// The worker's HTTP endpoint: `GET /metrics`, `/healthz`, `/readyz`. A minimal HTTP/1.1
/// server on one dedicated thread (requests are a few per scrape interval; every answer
/// is computed from memory, never from a dependency), with `Connection: close` after each
/// response. Chosen over swift-nio to keep CI builds short (docs/decisions.md).
public final class MetricsServer: Sendable {
    public let port: Int
    private let listener: Int32

    /// What it serves; deployment probes and scrapers may use only these.
    public static let endpoints = ["/metrics", "/healthz", "/readyz"]

    /// Binds `0.0.0.0:port` (0 = any free port; `port` then tells which) and starts serving.
    public init(port: Int, registry: MetricsRegistry, health: Health, logger: Logger) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw WorkerError.configuration("metrics endpoint: socket() failed, errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr = in_addr(s_addr: INADDR_ANY)
        let bound = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            let code = errno
            close(fd)
            throw WorkerError.configuration("metrics endpoint: cannot listen on port \(port): \(String(cString: strerror(code)))")
        }
        var actual = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        self.port = Int(UInt16(bigEndian: actual.sin_port))
        self.listener = fd
        let thread = Thread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR { continue }
                    return  // listener closed
                }
                Self.serve(client, registry: registry, health: health)
                close(client)
            }
        }
        thread.name = "metrics-http"
        thread.start()
        logger.info("serving /metrics, /healthz and /readyz", metadata: ["port": "\(self.port)"])
    }

    public func shutdown() {
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    static func serve(_ fd: Int32, registry: MetricsRegistry, health: Health) {
        // A client that stalls holds the endpoint at most 5 s each way.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // The request line and headers; bodies are not expected.
        var request: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while request.count < 16_384 {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            request += buffer[0..<n]
            if endsHeaders(request) { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self).split(separator: " ")
        let (status, contentType, body): (String, String, String)
        if line.count < 2 || (line[0] != "GET" && line[0] != "HEAD") {
            (status, contentType, body) = ("405 Method Not Allowed", "text/plain", "only GET\n")
        } else {
            let path = line[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
            switch path {
            case "/metrics":
                (status, contentType, body) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", registry.render())
            case "/healthz":
                (status, contentType, body) = ("200 OK", "text/plain", "alive\n")
            case "/readyz":
                let r = health.report
                (status, contentType, body) = (r.ready ? "200 OK" : "503 Service Unavailable", "text/plain", r.text)
            default:
                (status, contentType, body) = ("404 Not Found", "text/plain", "try /metrics, /healthz or /readyz\n")
            }
        }
        let bytes = Array(body.utf8)
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(bytes.count)\r\nConnection: close\r\n\r\n"
        writeAll(fd, Array(head.utf8) + (line.first == "HEAD" ? [] : bytes))
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            // MSG_NOSIGNAL: a scraper that hangs up early must not kill the worker with SIGPIPE.
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            sent += n
        }
    }
}

/// True once the blank line ending the request headers has arrived.
func endsHeaders(_ bytes: [UInt8]) -> Bool {
    guard bytes.count >= 4 else { return false }
    for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
        return true
    }
    return false
}

/// A one-shot HTTP GET against a local endpoint (tests and `herald dev` read workers'
/// /metrics with it); nil when nothing answers.
public enum HTTPGet {
    public static func local(port: Int, path: String, timeoutSeconds: Int = 5) -> (status: Int, body: String)? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr = in_addr(s_addr: in_addr_t(0x7F00_0001).bigEndian)
        let connected = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { return nil }
        MetricsServer.writeAll(fd, Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".utf8))
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            response += buffer[0..<n]
        }
        let text = String(decoding: response, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n") else { return nil }
        let statusLine = text[..<headerEnd.lowerBound].split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { return nil }
        return (status, String(text[headerEnd.upperBound...]))
    }
}

/// Reading series back out of a Prometheus text exposition.
public enum PrometheusText {
    /// The value of `name{labels}` (labels as written, e.g. `topic="orders"`), or nil.
    public static func value(_ text: String, _ name: String, _ labels: String = "") -> Double? {
        let key = labels.isEmpty ? name : "\(name){\(labels)}"
        for line in text.split(separator: "\n") where line.hasPrefix(key + " ") {
            return Double(line.dropFirst(key.count + 1))
        }
        return nil
    }

    /// Every sample of `name` whatever its labels.
    public static func samples(_ text: String, _ name: String) -> [(labels: String, value: Double)] {
        text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix(name + "{") || line.hasPrefix(name + " "),
                  let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { return nil }
            let head = line[..<space]
            let labels = head.firstIndex(of: "{").map { String(head[head.index(after: $0)..<head.index(before: head.endIndex)]) } ?? ""
            return (labels, v)
        }
    }
}
