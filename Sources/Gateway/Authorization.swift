import MQTTCodec

/// The one place where CONNECT, PUBLISH and SUBSCRIBE are allowed or refused.
/// Rules here are the protocol-level ones; credentials and per-device ACLs plug in
/// at these three functions.
extension Shard {
    struct Refusal {
        var code: ConnectReturnCode
        var why: String
    }

    func authorizeConnect(_ c: Connect) -> Refusal? {
        if c.clientID.utf8.count > config.mqtt.maxClientIDLength {
            return Refusal(code: .identifierRejected,
                           why: "client id longer than \(config.mqtt.maxClientIDLength) bytes")
        }
        return nil
    }

    /// nil to allow, else the reason.
    func authorizePublish(_ session: Session, _ p: Publish) -> String? {
        // `$` topics belong to the server (4.7.2): clients may read $SYS, never write it.
        if p.topic.utf8.first == UInt8(ascii: "$") { return "topics starting with $ are reserved" }
        return nil
    }

    func authorizeSubscribe(_ session: Session, _ t: TopicRequest) -> String? {
        if session.subscriptionIndex(t.filter) == nil
            && session.subscriptions.count >= config.mqtt.maxSubscriptionsPerClient {
            return "more than \(config.mqtt.maxSubscriptionsPerClient) subscriptions"
        }
        return nil
    }
}
