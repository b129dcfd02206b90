import Foundation

/// Child processes by posix_spawn and waitpid.
///
/// Not `Foundation.Process`: on Linux it notices a child's exit through a descriptor that
/// later children (and daemons such as the server `pg_ctl` starts) inherit, so
/// `waitUntilExit()` can hang long after the child is gone. Here a child gets stdin from
/// /dev/null, stdout and stderr appended to a log file, and no other descriptor.
enum Spawn {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// Starts `argv` in `directory` (the current one when nil) and returns its pid.
    static func start(_ argv: [String], environment: [String: String]? = nil, directory: String? = nil,
                      log: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let openDescriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        for name in openDescriptors {
            if let fd = Int32(name), fd > 2, fcntl(fd, F_GETFD) != -1 { posix_spawn_file_actions_addclose(&actions, fd) }
        }
        // chdir through sh: posix_spawn_file_actions_addchdir_np is not visible to Swift on glibc.
        let command = directory.map { ["/bin/sh", "-c", "cd \"$0\" || exit 1; exec \"$@\"", $0] + argv } ?? argv
        let cArguments: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        var cEnvironment: [UnsafeMutablePointer<CChar>?]? = environment.map { env in
            env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        }
        defer { cEnvironment?.forEach { free($0) } }
        var pid = pid_t()
        let spawned: Int32
        if cEnvironment != nil {
            spawned = cEnvironment!.withUnsafeMutableBufferPointer { envp in
                posix_spawn(&pid, command[0], &actions, nil, cArguments, envp.baseAddress)
            }
        } else {
            spawned = posix_spawn(&pid, command[0], &actions, nil, cArguments, environ)
        }
        guard spawned == 0 else {
            throw Failure(description: "could not run \(argv[0]): \(String(cString: strerror(spawned)))")
        }
        return pid
    }

    /// Waits for `pid` (or only checks, with `block: false`); the exit status, 128+signal
    /// when killed, or nil when it is still running.
    static func wait(_ pid: pid_t, block: Bool = true) -> Int32? {
        var status: Int32 = 0
        while true {
            let r = waitpid(pid, &status, block ? 0 : WNOHANG)
            if r == pid { break }
            if r == 0 { return nil }
            if errno == EINTR { continue }
            return -1
        }
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// Runs `argv` to completion; its exit status.
    static func run(_ argv: [String], directory: String? = nil, log: String) throws -> Int32 {
        let pid = try start(argv, directory: directory, log: log)
        return wait(pid) ?? -1
    }
}
