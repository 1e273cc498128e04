extension Config.Redis {
    /// The seeds of a cluster (`address`, comma-separated).
    var seeds: [String] {
        address.split(separator: ",").map { String($0.trimmingCharacters(in: " \t")) }.filter { !$0.isEmpty }
    }

    /// Uplink streams per route.
    var partitions: Int { uplinkPartitions > 0 ? uplinkPartitions : (cluster ? 16 : 1) }

    /// The keys a Lua script touches together must share a slot in a cluster: the
    /// presence hashes and every node's command stream (`Script.claimPresence`,
    /// `Script.forwardCommand`). With `cluster`, the defaults carry the hash tag
    /// `{pilegate}`; names set in the config are kept as given (and checked).
    mutating func clusterDefaults() {
        guard cluster else { return }
        if presenceKey == "pilegate:presence" { presenceKey = "{pilegate}:presence" }
        if downlinkPrefix == "pilegate:down:" { downlinkPrefix = "{pilegate}:down:" }
    }

    func clusterProblems(routes: [Config.Route]) -> [String] {
        var problems: [String] = []
        if partitions > 1 {
            for s in [defaultStream] + routes.map(\.stream) where s.contains("{") || s.contains("}") {
                problems.append("stream \"\(s)\" must not contain { or }: its partitions are named \(s):{0}, \(s):{1}, ..")
            }
        }
        guard cluster else { return problems }
        if database != 0 { problems.append("redis.database must be 0 with cluster = true (a cluster has one database)") }
        let tag = Config.Redis.hashTag(presenceKey)
        if tag == nil || tag != Config.Redis.hashTag(downlinkPrefix) {
            problems.append("with cluster = true, redis.presence_key and redis.downlink_prefix must share a hash tag (as {pilegate}:presence and {pilegate}:down:), so one script can write both")
        }
        return problems
    }

    /// The text between a key's first `{` and the next `}`, if not empty.
    static func hashTag(_ key: String) -> Substring? {
        guard let open = key.firstIndex(of: "{"), let close = key[open...].firstIndex(of: "}"),
              key.index(after: open) < close else { return nil }
        return key[key.index(after: open)..<close]
    }
}

private extension Substring {
    func trimmingCharacters(in set: String) -> Substring {
        var s = self
        while let f = s.first, set.contains(f) { s = s.dropFirst() }
        while let l = s.last, set.contains(l) { s = s.dropLast() }
        return s
    }
}
