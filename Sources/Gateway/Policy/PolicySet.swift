/// Everything a reload can change, built and checked whole before any shard sees
/// it: the config in force and the objects compiled from it. A shard holds one
/// `PolicySet` and swaps it between two turns (`ShardMessage.reload`), so every
/// check in a turn sees one config.
final class PolicySet: Sendable {
    let config: Config
    let authenticator: Authenticator
    let acl: ACL
    let rates: RateRules
    let tls: TLSContext?

    init(config: Config, authenticator: Authenticator, acl: ACL, rates: RateRules, tls: TLSContext?) {
        self.config = config; self.authenticator = authenticator; self.acl = acl; self.rates = rates; self.tls = tls
    }
}
