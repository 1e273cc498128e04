import MQTTCodec
import PileLoop

/// CONNECTs not finished yet, by slot: each waits for one thing, and whoever
/// ends the wait finishes the CONNECT (`resumeConnect`, `endHold`,
/// `credentialsReplied`); `close` forgets them all.
struct ConnectWaits {
    /// For the previous holder of the client id to leave (a takeover, maybe on
    /// another shard).
    var takeover: [UInt32: (connect: Connect, role: UInt16)] = [:]
    /// For a connect-rate slot in the future (limits.over_rate = "wait").
    var rateSlot: [UInt32: Connect] = [:]
    /// For the user's credentials from Redis.
    var credentials: [UInt32: Connect] = [:]

    /// The slot closed: drop its waits; returns a takeover wait's client id.
    mutating func forget(_ slot: UInt32) -> String? {
        rateSlot[slot] = nil
        credentials[slot] = nil
        return takeover.removeValue(forKey: slot)?.connect.clientID
    }

    /// For log lines before a session exists.
    func clientID(_ slot: UInt32) -> String? { takeover[slot]?.connect.clientID }
}

extension Shard {
    /// CONNECT (3.1): check the client id, pass the front door's storm limits,
    /// authorize, take over any connection that holds the same id (possibly on
    /// another shard), then CONNACK.
    func handleConnect(_ slot: UInt32, _ connect: Connect) {
        var c = connect
        if c.clientID.isEmpty {
            // 3.1.3-7/8: only a clean session may omit its id, and then the server names it.
            guard c.cleanSession, config.mqtt.allowZeroLengthClientID else {
                return refuseConnect(slot, .identifierRejected, why: "empty client id")
            }
            c.clientID = generatedClientID(slot)
        }
        if let why = banRefusal(c.clientID) {
            return refuseConnect(slot, .notAuthorized, why: why, clientID: c.clientID, denial: .banned)
        }
        switch ctx.connectGuard.admit(clientID: c.clientID, peer: slab[Int(slot)].peer, now: monotonicNanos()) {
        case .go:
            authorizeAndAttach(slot, c)
        case .wait(let nanos):
            // Its connect-rate slot is reserved; the CONNECT goes on in `endHold`.
            counters.add(.connectRateWaits)
            waits.rateSlot[slot] = c
            hold(slot, nanos: nanos)
        case .refuse(let code, let why, let kind):
            refuseConnect(slot, code, why: why, clientID: c.clientID, denial: kind)
        }
    }

    func authorizeAndAttach(_ slot: UInt32, _ c: Connect) {
        switch authorizeConnect(slot, c) {
        case .refuse(let r):
            return refuseConnect(slot, r.code, why: r.why, clientID: c.clientID, denial: r.denial)
        case .lookup(let user):
            // Not read until Redis answers (`credentialsReplied`); the CONNECT deadline still runs.
            waits.credentials[slot] = c
            holdReading(slot)
            redis?.lookupCredentials(user, expect: .credentials(slot: slot, generation: slab[Int(slot)].generation, user: user))
        case .allow(let role):
            slab[Int(slot)].keepAlive = c.keepAlive
            attachSession(slot, c, role: role)
        }
    }

    /// Claim the client id in the Broker; CONNACK once no other connection holds it.
    func attachSession(_ slot: UInt32, _ c: Connect, role: UInt16) {
        let owner = Owner(shard: index, slot: slot, generation: slab[Int(slot)].generation)
        switch broker.beginConnect(clientID: c.clientID, owner: owner, cleanSession: c.cleanSession) {
        case .waitForTakeover:
            waits.takeover[slot] = (c, role)
            slab[Int(slot)].state = .awaitingTakeover
        case .ready(let session, let present):
            session.persistent = !c.cleanSession
            wills[slot] = c.will
            session.role = role
            session.username = c.username
            session.connectedAtMs = wallMillis()
            session.rateReported = false
            session.lastPublish = nowTick32
            // The CONNECT arrived before there was a session to count it in.
            session.countIn(Encoder.size(of: .connect(c)), overhead: overhead(slot), today: today)
            session.silentReported = false
            slab[Int(slot)].session = session
            if let redis {
                redis.present(c.clientID, since: session.connectedAtMs)
                redis.event("connect", device: c.clientID, [("clean", c.cleanSession ? "1" : "0"),
                                                            ("keepalive", String(c.keepAlive))])
            }
            slab[Int(slot)].state = .connected
            counters.add(.connectsAccepted)
            counters.add(.clientsConnected)
            send(slot, .connack(Connack(sessionPresent: present, returnCode: .accepted)))
            if c.keepAlive > 0 {
                schedule(slot, at: keepaliveDue(Int(slot)))
            } else {
                wheel.cancel(slot)   // no CONNECT timeout, and no keepalive to watch
            }
            logger.info("connected", metadata: [
                "client": "\(c.clientID)", "peer": "\(slab[Int(slot)].peer)", "clean": "\(c.cleanSession)", "keepalive": "\(c.keepAlive)",
                "session_present": "\(present)",
            ])
            session.mailFetches = 0
            if present {
                reportDrops(slot, session, away: true)
                resumeSession(slot)
                fetchMail(slot)   // commands kept for it while it was away
            }
        }
    }

    /// The previous holder of this connection's client id is gone: finish CONNECT,
    /// then parse what the pile sent after it.
    func resumeConnect(_ slot: UInt32) {
        guard slab[Int(slot)].state == .awaitingTakeover, let w = waits.takeover.removeValue(forKey: slot) else { return }
        attachSession(slot, w.connect, role: w.role)
        if slab[Int(slot)].state == .connected && !buffered(slot).inbound.isEmpty {
            drainInbound(slot)
        }
    }

    /// Redis answered a credential lookup: learn the entry, then decide the CONNECT.
    func credentialsReplied(slot: UInt32, generation: UInt32, user: String, _ r: RedisReply) {
        if r.isError {
            counters.add(.redisErrors)
            logger.warning("redis error on credential lookup: \(r.text)")
        } else {
            policy.authenticator.learn(user, entry: r.isNil ? nil : r.text, nowMs: monotonicMillis())
        }
        guard isCurrent(slot, generation), let c = waits.credentials.removeValue(forKey: slot) else { return }
        slab[Int(slot)].throttled = false
        if r.isError { return refuseConnect(slot, .serverUnavailable, why: "credential lookup failed", clientID: c.clientID) }
        authorizeAndAttach(slot, c)
        if slab[Int(slot)].state == .connected { resumeReading(slot) }
    }

    /// CONNACK with a refusal code, then close once it is sent (3.2.2.3). A refusal
    /// by policy (`denial`) is also counted by kind and emitted as an event.
    func refuseConnect(_ slot: UInt32, _ code: ConnectReturnCode, why: String, clientID: String? = nil,
                       denial: Denial? = nil) {
        counters.add(.connectsRefused)
        if let denial {
            denied(slot, denial, "CONNECT refused (\(code)): \(why)", clientID: clientID)
        } else {
            var meta = who(slot)
            if let clientID { meta["client"] = "\(clientID)" }
            logger.info("CONNECT refused (\(code)): \(why)", metadata: meta)
        }
        send(slot, .connack(Connack(sessionPresent: false, returnCode: code)))
        close(slot, .refused, flush: true)
    }

    private func generatedClientID(_ slot: UInt32) -> String {
        "pg-\(config.server.node)-\(index)-\(slot)-\(slab[Int(slot)].generation)-\(wheel.now)"
    }
}
