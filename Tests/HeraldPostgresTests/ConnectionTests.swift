import Foundation
import HeraldPostgres
import Logging
import Testing

@Suite struct ConnectionTests {
    @Test func connectsWithKeyValueConninfo() throws {
        let connection = try TestDatabase.connect()
        #expect(connection.isHealthy)
        let result = try connection.execute("SELECT 1 AS one, current_setting('client_encoding') AS encoding")
        #expect(result.columns == ["one", "encoding"])
        #expect(result[0, 0] == "1")
        #expect(result[0, "encoding"] == "UTF8")
        #expect(connection.serverVersion >= 100000)
    }

    @Test func connectsWithURL() throws {
        let url = try TestDatabase.urlConninfo()
        #expect(url.hasPrefix("postgresql://"))
        let connection = try PostgresConnection(url, logger: TestDatabase.logger)
        #expect(try connection.execute("SELECT current_user")[0, 0] != nil)
        #expect(try connection.execute("SELECT current_database()")[0, 0] == TestDatabase.parameters(TestDatabase.conninfo())["dbname"] ?? "herald")
    }

    @Test func parameterisedRoundTrip() throws {
        try withSchema { connection, _ in
            try connection.execute("CREATE TABLE items (id int PRIMARY KEY, name text, note text)")
            let values: [(Int, String?, String?)] = [
                (1, "plain", nil),
                (2, "中文字符 — 你好，世界", "emoji 🎉 and ünïcødé"),
                (3, "it's \"quoted\" 'twice'", #"back\slash \\ and \N and \t"#),
                (4, "", "tab\tnewline\ncr\rend"),
                (5, "'; DROP TABLE items; --", "$1 $2"),
            ]
            for (id, name, note) in values {
                let inserted = try connection.execute(
                    "INSERT INTO items (id, name, note) VALUES ($1, $2, $3)", [String(id), name, note]
                )
                #expect(inserted.affectedRows == 1)
                #expect(inserted.commandTag == "INSERT 0 1")
            }
            let result = try connection.execute("SELECT id, name, note FROM items ORDER BY id")
            #expect(result.rowCount == values.count)
            #expect(result.columns == ["id", "name", "note"])
            for (index, (id, name, note)) in values.enumerated() {
                #expect(result[index, "id"] == String(id))
                #expect(result[index, 1] == name)
                #expect(result[index, "note"] == note)
            }
            #expect(result.rows[0] == ["1", "plain", nil])
            #expect(result[0, "missing"] == nil)

            let one = try connection.execute("SELECT name FROM items WHERE name = $1", ["中文字符 — 你好，世界"])
            #expect(one.rowCount == 1)
            let nulls = try connection.execute("SELECT count(*) FROM items WHERE note IS NULL AND $1::text IS NULL", [nil])
            #expect(nulls[0, 0] == "1")
            let updated = try connection.execute("UPDATE items SET note = $1 WHERE id > $2", ["x", "2"])
            #expect(updated.affectedRows == 3)
            #expect(updated.rowCount == 0)
        }
    }

    @Test func nulCharacterInParameterIsRejected() throws {
        let connection = try TestDatabase.connect()
        let error = expectPostgresError { try connection.execute("SELECT $1::text", ["a\u{0}b"]) }
        #expect(error?.isConnectionFailure == false)
        #expect(try connection.execute("SELECT 1")[0, 0] == "1")
    }

    @Test func multipleStatementsWithoutParameters() throws {
        try withSchema { connection, _ in
            let result = try connection.execute("""
                CREATE TABLE IF NOT EXISTS m (x int);
                CREATE TABLE IF NOT EXISTS m (x int);  -- NOTICE goes to the logger, not stderr
                INSERT INTO m VALUES (1), (2);
                SELECT sum(x) AS total FROM m;
                """)
            #expect(result[0, "total"] == "3")
        }
    }

    @Test func syntaxErrorHasSQLState42601() throws {
        let connection = try TestDatabase.connect()
        let error = expectPostgresError { try connection.execute("SELEC 1") }
        #expect(error?.sqlState == "42601")
        #expect(error?.isConnectionFailure == false)
        #expect(error?.message.contains("syntax error") == true)
        let withParams = expectPostgresError { try connection.execute("SELECT $1 FROM FROM", ["x"]) }
        #expect(withParams?.sqlState == "42601")
        #expect(connection.isHealthy)
        #expect(try connection.execute("SELECT 2")[0, 0] == "2")
    }

    @Test func uniqueViolationHasSQLState23505() throws {
        try withSchema { connection, _ in
            try connection.execute("CREATE TABLE u (k text PRIMARY KEY)")
            try connection.execute("INSERT INTO u VALUES ($1)", ["a"])
            let error = expectPostgresError { try connection.execute("INSERT INTO u VALUES ($1)", ["a"]) }
            #expect(error?.sqlState == "23505")
            #expect(error?.detail?.contains("(k)=(a)") == true)
            #expect(error?.isConnectionFailure == false)
            #expect(error.map { String(describing: $0) }?.contains("23505") == true)
        }
    }

    @Test func transactionCommitsAndRollsBack() throws {
        struct Boom: Error {}
        try withSchema { connection, _ in
            try connection.execute("CREATE TABLE tx (x int)")
            let value = try connection.transaction {
                try connection.execute("INSERT INTO tx VALUES ($1)", ["1"])
                return 42
            }
            #expect(value == 42)
            #expect(throws: Boom.self) {
                try connection.transaction {
                    try connection.execute("INSERT INTO tx VALUES ($1)", ["2"])
                    throw Boom()
                }
            }
            // A failing statement inside also rolls back, and the connection stays usable.
            let error = expectPostgresError {
                try connection.transaction {
                    try connection.execute("INSERT INTO tx VALUES ($1)", ["3"])
                    try connection.execute("INSERT INTO tx VALUES ($1)", ["not a number"])
                }
            }
            #expect(error?.sqlState == "22P02")
            // Nested: the inner block rolls back to its savepoint only.
            try connection.transaction {
                try connection.execute("INSERT INTO tx VALUES ($1)", ["4"])
                _ = try? connection.transaction {
                    try connection.execute("INSERT INTO tx VALUES ($1)", ["5"])
                    throw Boom()
                }
            }
            let rows = try connection.execute("SELECT x FROM tx ORDER BY x").rows.map { $0[0] }
            #expect(rows == ["1", "4"])
        }
    }

    @Test func copyFromStreamsManyRows() throws {
        try withSchema { connection, _ in
            try connection.execute("CREATE TABLE c (id int PRIMARY KEY, a text, b text)")
            let total = 100_000
            func a(_ i: Int) -> String? {
                switch i % 5 {
                case 0: return "row \(i)\twith tab"
                case 1: return "line\none\r\ntwo \\ backslash \\N not null"
                case 2: return nil
                case 3: return "中文 \(i) ✓"
                default: return "\\.\n"  // looks like an end-of-data marker after unescaping
                }
            }
            var appended = 0
            let copied = try connection.copyFrom("COPY c (id, a, b) FROM STDIN") { rows in
                for i in 0..<total {
                    rows.append([String(i), a(i), i % 7 == 0 ? nil : "b\(i)"])
                }
                appended = rows.count
            }
            #expect(copied == total)
            #expect(appended == total)
            #expect(try connection.execute("SELECT count(*) FROM c")[0, 0] == String(total))
            #expect(try connection.execute("SELECT count(*) FROM c WHERE a IS NULL")[0, 0] == String(total / 5))
            for i in [0, 1, 2, 3, 4, 7, 99_999, 54_321] {
                let row = try connection.execute("SELECT a, b FROM c WHERE id = $1", [String(i)])
                #expect(row[0, "a"] == a(i), "row \(i)")
                #expect(row[0, "b"] == (i % 7 == 0 ? nil : "b\(i)"), "row \(i)")
            }
        }
    }

    /// Rows written field by field: text, `text[]` and caller-formatted fields; a NUL in an
    /// array element or an ASCII field that needs escaping fails the COPY with nothing stored.
    @Test func copyFromFieldByField() throws {
        try withSchema { connection, _ in
            try connection.execute("CREATE TABLE f (id int, a text, l text[], t timestamptz)")
            let values = ["plain", "tab\t", "nl\n", "back\\slash", "quote\"", "{a,b}", "", "NULL", "中文"]
            try connection.copyFrom("COPY f FROM STDIN") { rows in
                for (i, v) in values.enumerated() {
                    rows.asciiField { $0 += Array(String(i).utf8) }
                    rows.field(i == 0 ? nil : v)
                    rows.arrayField(i == 1 ? [] : values)
                    rows.asciiField { $0 += Array("2026-11-25T08:00:00.5Z".utf8) }
                    rows.endRow()
                }
            }
            let literal = "{" + values.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\")
                .replacingOccurrences(of: "\"", with: "\\\"") + "\"" }.joined(separator: ",") + "}"
            for (i, v) in values.enumerated() {
                let r = try connection.execute("""
                    SELECT a IS NOT DISTINCT FROM $2, l = $3::text[], t = '2026-11-25T08:00:00.5Z' FROM f WHERE id = $1
                    """, [String(i), i == 0 ? nil : v, i == 1 ? "{}" : literal])
                #expect(r.rows.first == ["t", "t", "t"], "row \(i)")
            }
            let nul = expectPostgresError {
                try connection.copyFrom("COPY f FROM STDIN") { rows in
                    rows.append(["100", "ok", "{}", nil])
                    rows.field("101"); rows.field("x"); rows.arrayField(["a\u{0}b"]); rows.field(nil); rows.endRow()
                }
            }
            #expect(nul?.sqlState == "22021")
            let unescaped = expectPostgresError {
                try connection.copyFrom("COPY f FROM STDIN") { rows in
                    rows.field("102"); rows.field("x"); rows.arrayField([]); rows.asciiField { $0 += [0x09] }; rows.endRow()
                }
            }
            #expect(unescaped?.sqlState == "22021")
            #expect(try connection.execute("SELECT count(*) FROM f")[0, 0] == String(values.count))
        }
    }

    @Test func copyFromAbortsOnThrowAndBadData() throws {
        struct Stop: Error {}
        try withSchema { connection, _ in
            try connection.execute("CREATE TABLE c (id int, a text)")
            #expect(throws: Stop.self) {
                try connection.copyFrom("COPY c FROM STDIN") { rows in
                    for i in 0..<70_000 { rows.append([String(i), "x"]) }  // > 256 KiB already sent
                    throw Stop()
                }
            }
            #expect(try connection.execute("SELECT count(*) FROM c")[0, 0] == "0")

            let typeError = expectPostgresError {
                try connection.copyFrom("COPY c FROM STDIN") { rows in
                    rows.append(["1", "ok"])
                    rows.append(["not a number", "bad"])
                }
            }
            #expect(typeError?.sqlState == "22P02")
            #expect(try connection.execute("SELECT count(*) FROM c")[0, 0] == "0")

            let notCopy = expectPostgresError { try connection.copyFrom("SELECT 1") { _ in } }
            #expect(notCopy?.isConnectionFailure == false)
            let viaExecute = expectPostgresError { try connection.execute("COPY c FROM STDIN") }
            #expect(viaExecute?.isConnectionFailure == false)
            #expect(try connection.execute("SELECT 1")[0, 0] == "1")
        }
    }

    @Test func unreachableServerIsConnectionFailureWithoutPassword() throws {
        let secret = "S3cr3t-Pa55word"
        let conninfos = [
            "host=/nonexistent-herald-dir port=5 user=postgres password=\(secret) dbname=herald connect_timeout=2",
            "host=/nonexistent-herald-dir port=5 user=postgres password='\(secret) x' dbname=herald",
            "postgresql://postgres:\(secret)@/herald?host=%2Fnonexistent-herald-dir&port=5",
            "postgresql://postgres@/herald?host=%2Fnonexistent-herald-dir&password=\(secret)",
            // libpq echoes a malformed percent-escape in its error message:
            "postgresql://postgres:\(secret)%zz@/herald?host=%2Fnonexistent-herald-dir",
        ]
        for conninfo in conninfos {
            let error = expectPostgresError { _ = try PostgresConnection(conninfo, logger: TestDatabase.logger) }
            #expect(error?.isConnectionFailure == true, "\(conninfo)")
            let text = error.map { "\($0) \($0.message) \($0.detail ?? "")" } ?? ""
            #expect(!text.contains(secret), "password leaked: \(text)")
            #expect(!text.contains("S3cr3t"), "password leaked: \(text)")
        }
    }

    @Test func wrongPasswordIsConnectionFailureWithoutPassword() throws {
        // The throwaway server trusts everyone; when its pg_hba.conf is writable here, require a
        // password for one dedicated role only (other tests are unaffected).
        let admin = try TestDatabase.connect()
        guard let hbaPath = try admin.execute("SHOW hba_file")[0, 0],
              FileManager.default.isWritableFile(atPath: hbaPath) else {
            return  // external server: covered by unreachableServerIsConnectionFailureWithoutPassword
        }
        let role = "herald_pw_test"
        let line = "local all \(role) scram-sha-256\nhost all \(role) all scram-sha-256\n"
        let hba = try String(contentsOfFile: hbaPath, encoding: .utf8)
        if !hba.contains(line) {
            try (line + hba).write(toFile: hbaPath, atomically: false, encoding: .utf8)
            try admin.execute("SELECT pg_reload_conf()")
            Thread.sleep(forTimeInterval: 0.3)
        }
        try admin.execute("""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald_pw_test') THEN
                CREATE ROLE herald_pw_test LOGIN PASSWORD 'right-password';
              END IF;
            END $$
            """)
        let params = TestDatabase.parameters(try TestDatabase.conninfo())
        let base = "host=\(params["host"] ?? "localhost") port=\(params["port"] ?? "5432") dbname=\(params["dbname"] ?? "herald")"
        let wrong = "Wr0ngPassw0rd-XYZ"
        let error = expectPostgresError {
            _ = try PostgresConnection("\(base) user=\(role) password=\(wrong)", logger: TestDatabase.logger)
        }
        #expect(error?.isConnectionFailure == true)
        #expect(error?.message.contains("password authentication failed") == true, "\(String(describing: error))")
        #expect(error.map { "\($0)".contains(wrong) } == false)
        #expect(error?.message.contains("password=***") == true)
        // And the right password works.
        let ok = try PostgresConnection("\(base) user=\(role) password=right-password", logger: TestDatabase.logger)
        #expect(try ok.execute("SELECT current_user")[0, 0] == role)
    }

    @Test func terminatedBackendIsConnectionFailureAndReconnectRecovers() throws {
        let victim = try TestDatabase.connect()
        let killer = try TestDatabase.connect()
        let pid = try #require(try victim.execute("SELECT pg_backend_pid()")[0, 0])
        let terminated = try killer.execute("SELECT pg_terminate_backend($1::int, 5000)", [pid])
        #expect(terminated[0, 0] == "t")

        let error = expectPostgresError { try victim.execute("SELECT 1") }
        #expect(error?.isConnectionFailure == true, "\(String(describing: error))")
        #expect(!victim.isHealthy)

        try victim.reconnect()
        #expect(victim.isHealthy)
        #expect(try victim.execute("SELECT 1")[0, 0] == "1")
        #expect(try victim.execute("SELECT pg_backend_pid()")[0, 0] != pid)
        #expect(try victim.execute("SELECT current_setting('client_encoding')")[0, 0] == "UTF8")
    }
}
