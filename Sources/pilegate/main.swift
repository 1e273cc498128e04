import ArgumentParser
import Foundation
import Gateway
import Logging

struct Pilegate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pilegate",
        abstract: "MQTT 3.1.1 broker-edge for charging piles, on io_uring.",
        version: pilegateVersion,
        subcommands: [Serve.self, Passwd.self, CheckConfig.self],
        defaultSubcommand: Serve.self
    )
}

/// Run the gateway (the default).
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (default).")

    @Option(name: .long, help: "Listen address HOST:PORT (overrides listener.bind).")
    var listen: String?

    @Option(name: .long, help: "TOML configuration file (see ops/pilegate.example.toml).")
    var config: String?

    @Option(name: .long, help: "Log level (overrides log.level).")
    var logLevel: String?

    func run() throws {
        var cfg = Config()
        if let path = config {
            let text = try String(contentsOfFile: path, encoding: .utf8)
            cfg = try Config(toml: text)
        }
        if let l = listen { cfg.listener.bind = l }
        if let l = logLevel { cfg.log.level = l }
        let level = Logger.Level(rawValue: cfg.log.level) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "pilegate")
        do {
            try Server(config: cfg, logger: logger, configPath: config, listenOverride: listen).run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }
}

/// Check a config file without starting: exit 0 when it would run (warnings are
/// printed too), 1 with every problem listed.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Check a config file and the files it names; list every problem and risky setting.")

    @Argument(help: "TOML configuration file.") var file: String

    func run() throws {
        let check = ConfigCheck(path: file)
        for p in check.problems { print("error: \(p)") }
        for w in check.warnings { print("warning: \(w)") }
        print("\(file): \(check.problems.count) error(s), \(check.warnings.count) warning(s)")
        if !check.problems.isEmpty { throw ExitCode(1) }
    }
}

/// Add, change or remove a user in a password file (mosquitto_passwd's format,
/// so files made by either tool work with both), or import many at once.
struct Passwd: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Add, change or remove a password file entry (PBKDF2-SHA512, mosquitto_passwd format).")

    @Argument(help: "Password file (created if missing).") var file: String
    @Argument(help: "User name (a pile's id, or an operator); not with --import.") var user: String?
    @Option(help: "Password; without it, the first line of standard input.") var password: String?
    @Flag(help: "Remove the user.") var delete = false
    @Flag(help: "Add or change every user of standard input's lines, USER:PASSWORD or USER,PASSWORD (a CSV without quoting), in one write of the file.")
    var `import` = false
    @Option(help: "PBKDF2 iterations for the new hash.") var iterations = PasswordFile.defaultIterations

    func validate() throws {
        if `import` {
            guard user == nil, password == nil, !delete else { throw ValidationError("--import takes its users from standard input only") }
        } else {
            guard let user, !user.isEmpty, !user.contains(":") else {
                throw ValidationError("a user name is needed, and cannot be empty or contain ':'")
            }
        }
        guard (1...10_000_000).contains(iterations) else { throw ValidationError("--iterations 1...10000000") }
    }

    func run() throws {
        var pw = FileManager.default.fileExists(atPath: file) ? try PasswordFile(path: file) : PasswordFile()
        if `import` {
            // Every line is checked before anything is written: a bad line leaves the file as it was.
            var entries: [(String, String)] = []
            var n = 0
            while let line = readLine(strippingNewline: true) {
                n += 1
                if line.isEmpty { continue }
                guard let cut = line.firstIndex(where: { $0 == ":" || $0 == "," }) else {
                    throw ValidationError("line \(n): not USER:PASSWORD or USER,PASSWORD")
                }
                let u = String(line[..<cut]), p = String(line[line.index(after: cut)...])
                guard !u.isEmpty, !p.isEmpty else { throw ValidationError("line \(n): empty user name or password") }
                entries.append((u, p))
            }
            for (u, p) in entries { pw.set(u, password: p, iterations: iterations) }
            print("\(entries.count) users imported into \(file)")
        } else if delete {
            let user = user!
            guard pw.remove(user) else { throw ValidationError("no user \(user) in \(file)") }
        } else {
            guard let secret = password ?? readLine(strippingNewline: true), !secret.isEmpty else {
                throw ValidationError("no password given")
            }
            pw.set(user!, password: secret, iterations: iterations)
        }
        // Written whole and renamed into place. A new file is readable by its owner
        // only; an existing one keeps its owner, group and mode (root:pilegate 0640
        // for the service), so editing it never locks the service out.
        let tmp = file + ".tmp"
        var old = stat()
        let existed = stat(file, &old) == 0
        guard FileManager.default.createFile(atPath: tmp, contents: Data(pw.text.utf8), attributes: [.posixPermissions: 0o600])
        else { throw ValidationError("cannot write \(file)") }
        if existed {
            _ = chown(tmp, old.st_uid, old.st_gid)
            _ = chmod(tmp, old.st_mode & 0o7777)
        }
        guard rename(tmp, file) == 0 else { throw ValidationError("cannot write \(file)") }
    }
}

Pilegate.main()
