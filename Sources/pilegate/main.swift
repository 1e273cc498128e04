import ArgumentParser
import Foundation
import Gateway
import Logging

struct Pilegate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pilegate",
        abstract: "MQTT 3.1.1 broker-edge for charging piles, on io_uring.",
        version: pilegateVersion
    )

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
            try Server(config: cfg, logger: logger).run()
        } catch {
            logger.critical("\(error)")
            throw ExitCode(1)
        }
    }
}

Pilegate.main()
