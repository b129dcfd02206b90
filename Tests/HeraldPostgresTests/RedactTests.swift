import HeraldPostgres
import Testing

@Suite struct RedactTests {
    @Test(arguments: [
        ("postgresql://user:pw@host/db", "postgresql://user:***@host/db"),
        ("postgres://user:pw@host:5432/db?sslmode=require", "postgres://user:***@host:5432/db?sslmode=require"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("postgresql://host/db", "postgresql://host/db"),
        ("postgresql://user:p%40ss@h1,h2:5433/db", "postgresql://user:***@h1,h2:5433/db"),
        ("postgresql://user:p@ss/w?rd@host/db", "postgresql://user:***@host/db"),
        ("postgresql://user@host/db?password=xyz", "postgresql://user@host/db?password=***"),
        ("postgresql://u@h/db?sslmode=disable&password=xyz&application_name=a",
         "postgresql://u@h/db?sslmode=disable&password=***&application_name=a"),
        ("postgresql://u:a@h/db?password=b", "postgresql://u:***@h/db?password=***"),
        ("POSTGRESQL://u:secret@h/db", "POSTGRESQL://u:***@h/db"),
        ("password=xyz", "password=***"),
        ("host=h password=xyz user=u", "host=h password=*** user=u"),
        ("host=h password='x y' user=u", "host=h password=*** user=u"),
        ("host=h password = 'x \\' y' dbname=d", "host=h password = *** dbname=d"),
        ("host=h password=a\\ b user=u", "host=h password=*** user=u"),
        ("host=h sslpassword=k password=p", "host=h sslpassword=*** password=***"),
        ("host=h user=u dbname=d", "host=h user=u dbname=d"),
        ("host=h password='unterminated", "host=h password=***"),
        ("dbname='postgresql://u:pw@h/db' user=x", "dbname=*** user=x"),
        ("host=/tmp/x port=5432 user=postgres dbname=herald", "host=/tmp/x port=5432 user=postgres dbname=herald"),
        ("", ""),
    ])
    func redacts(input: String, expected: String) {
        #expect(PostgresConnection.redact(input) == expected)
    }
}
