import MQTTCodec
import PileLoop

/// The one place where CONNECT, PUBLISH and SUBSCRIBE are allowed or refused:
/// credentials (`Authenticator`), per-role topic rules (`ACL`) and the protocol's
/// own limits.
extension Shard {
    enum ConnectDecision {
        case allow(role: UInt16)
        case refuse(RefusalError)
        /// The user's credentials are in Redis and not cached: ask, then decide.
        case lookup(String)
    }

    /// The client's ACL role, or why it may not connect.
    func authorizeConnect(_ slot: UInt32, _ c: Connect) -> ConnectDecision {
        if c.clientID.utf8.count > config.mqtt.maxClientIDLength {
            return .refuse(RefusalError(code: .identifierRejected,
                                         why: "client id longer than \(config.mqtt.maxClientIDLength) bytes",
                                         denial: nil))
        }
        if config.tls.requireClientCertificate, let tls = slab[Int(slot)].tls {
            // Mutual TLS: the verified certificate is the credential, for this client id only.
            guard let cn = tls.peerCN, cn == c.clientID else {
                return .refuse(RefusalError(code: .notAuthorized,
                                             why: "certificate CN \(tls.peerCN ?? "(none)") is not the client id",
                                             denial: .certificate))
            }
            // A user name, if sent, must be the certificate's too: the role follows the
            // user name, so an unchecked one would let a pile's own certificate take an
            // operator's role (`-u op1`).
            if let user = c.username, user != cn {
                return .refuse(RefusalError(code: .notAuthorized,
                                             why: "user name \(user) is not the certificate CN \(cn)",
                                             denial: .certificate))
            }
            return .allow(role: policy.acl.role(username: cn, authenticated: true))
        }
        let peer = slab[Int(slot)].peer
        switch policy.authenticator.check(username: c.username, password: c.password, peer: peer, nowMs: monotonicMillis(),
                                       redisUp: redis?.link.state == .up) {
        case .accepted:
            let authenticated = c.username != nil && policy.authenticator.checksUsers
            let role = policy.acl.role(username: c.username, authenticated: authenticated)
            // A role whose topics are the client's own (%c) is only as strong as the
            // client id: an authenticated pile must use its own.
            if authenticated, let user = c.username, user != c.clientID, policy.acl.bindsClientID(role) {
                return .refuse(RefusalError(code: .notAuthorized,
                                             why: "client id \(c.clientID) is not the user name \(user) (role \(policy.acl.roleName(role)) binds them: bind_client_id)",
                                             denial: .clientID))
            }
            return .allow(role: role)
        case .lookup(let user):
            return .lookup(user)
        case .refused(let code, var why):
            if code == .serverUnavailable { return .refuse(RefusalError(code: code, why: why, denial: nil)) }
            if ctx.connectGuard.authFailed(peer, now: monotonicNanos()) {
                counters.add(.authFailureBans)
                why += "; IP banned for \(config.limits.authFailureBan) s after \(config.limits.authFailuresPerIP) failures"
            }
            return .refuse(RefusalError(code: code, why: why, denial: .auth))
        }
    }

    /// nil to allow, else the reason.
    func authorizePublish(_ session: Session, _ p: Publish) -> String? {
        // `$` topics belong to the server (4.7.2): clients may read $SYS, never write it.
        if p.topic.utf8.first == UInt8(ascii: "$") { return "topics starting with $ are reserved" }
        if !policy.acl.mayPublish(session.role, topic: p.topic, clientID: session.clientID, username: session.username) {
            return "ACL: role \(policy.acl.roleName(session.role)) may not publish here"
        }
        return nil
    }

    func authorizeSubscribe(_ session: Session, _ t: TopicRequest) -> String? {
        let stored = broker.ownTopic.stored(t.filter, clientID: session.clientID)
        if !session.subscriptions.contains(where: { $0.filter == stored })
            && session.subscriptions.count >= config.mqtt.maxSubscriptionsPerClient {
            return "more than \(config.mqtt.maxSubscriptionsPerClient) subscriptions"
        }
        if !policy.acl.maySubscribe(session.role, filter: t.filter, clientID: session.clientID, username: session.username) {
            return "ACL: role \(policy.acl.roleName(session.role)) may not subscribe here"
        }
        if policy.acl.deniesSubscribe(session.role, filter: t.filter, clientID: session.clientID, username: session.username) {
            return "ACL: role \(policy.acl.roleName(session.role)) denies this filter (deny_subscribe)"
        }
        return nil
    }
}

struct RefusalError: Error {
    var code: ConnectReturnCode
    var why: String
    var denial: Denial?
}

extension Shard {
    /// Every policy refusal and rate action ends here: counted by kind, one log
    /// line naming the client and peer, and an event on the events stream.
    func denied(_ slot: UInt32, _ kind: Denial, _ why: String, clientID: String? = nil,
                extra: [(String, String)] = []) {
        if let c = kind.counter { counters.add(c) }
        let id = clientID ?? self.clientID(slot)
        var meta = who(slot)
        meta["client"] = "\(id)"
        logger.info("denied (\(kind.rawValue)): \(why)", metadata: meta)
        if let redis, !redis.event("denied", device: id, [("kind", kind.rawValue), ("reason", why),
                                                          ("peer", "\(slab[Int(slot)].peer)")] + extra) {
            counters.add(.bookkeepingDropped)
        }
    }
}
