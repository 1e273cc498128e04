import COpenSSL
import PileLoop

/// The TLS listener's OpenSSL context: certificate chain, key, and for mutual TLS
/// the CA that client certificates must chain to. Shared by every shard (an
/// SSL_CTX is safe to use from several threads once configured).
final class TLSContext: @unchecked Sendable {
    let ctx: OpaquePointer

    init(_ c: Config.TLS) throws {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError("SSL_CTX_new") }
        self.ctx = ctx
        _ = cssl_ctx_set_min_tls12(ctx)
        // Idle piles keep no TLS read/write buffers (~34 KiB each otherwise).
        _ = cssl_ctx_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS))
        // Reconnecting piles resume their session instead of a full handshake.
        _ = cssl_ctx_set_session_cache_size(ctx, c.sessionCacheSize)
        guard SSL_CTX_use_certificate_chain_file(ctx, c.certificate) == 1 else {
            throw TLSError("tls.certificate \(c.certificate)")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, c.privateKey, SSL_FILETYPE_PEM) == 1,
              SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError("tls.private_key \(c.privateKey)")
        }
        if !c.ca.isEmpty {
            guard SSL_CTX_load_verify_locations(ctx, c.ca, nil) == 1 else { throw TLSError("tls.ca \(c.ca)") }
        }
        if c.requireClientCertificate {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }
        // TLS session ids are scoped to this context.
        var sid = Array("pilegate".utf8)
        _ = SSL_CTX_set_session_id_context(ctx, &sid, UInt32(sid.count))
    }

    deinit { SSL_CTX_free(ctx) }
}

struct TLSError: Error, CustomStringConvertible {
    let description: String
    init(_ what: String) { description = "TLS: \(what): \(TLSSession.lastError())" }
}

/// One connection's TLS state: an SSL object between two memory BIOs. The shard
/// writes received ciphertext in and reads plaintext out; it writes plaintext in
/// and takes ciphertext out to send. No socket is ever given to OpenSSL.
final class TLSSession {
    private let ssl: OpaquePointer
    private let rbio: OpaquePointer   // ciphertext from the pile
    private let wbio: OpaquePointer   // ciphertext to the pile
    private(set) var handshakeDone = false
    /// Subject CN of the verified client certificate (mutual TLS).
    private(set) var peerCN: String?

    init?(_ context: TLSContext) {
        guard let ssl = SSL_new(context.ctx), let r = BIO_new(BIO_s_mem()), let w = BIO_new(BIO_s_mem()) else {
            return nil
        }
        self.ssl = ssl
        rbio = r
        wbio = w
        SSL_set_bio(ssl, r, w)   // the SSL owns both BIOs now
        SSL_set_accept_state(ssl)
    }

    deinit { SSL_free(ssl) }

    enum Progress {
        case ok
        /// Fatal: the pile sent something TLS does not accept (or failed verification).
        case failed(String)
        /// The pile sent close_notify.
        case closed
    }

    /// Take received ciphertext, advance the handshake (`handshakeDone` says when it
    /// finished), and hand every decrypted byte to `plaintext` (a scratch buffer
    /// reused per call).
    func receive(_ bytes: UnsafeRawBufferPointer, scratch: UnsafeMutableRawBufferPointer,
                 plaintext: (UnsafeRawBufferPointer) -> Void) -> Progress {
        var off = 0
        while off < bytes.count {
            let n = BIO_write(rbio, bytes.baseAddress! + off, Int32(bytes.count - off))
            if n <= 0 { return .failed("BIO_write") }
            off += Int(n)
        }
        if !handshakeDone {
            let r = SSL_do_handshake(ssl)
            if r != 1 {
                let e = SSL_get_error(ssl, r)
                if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return .ok }
                return .failed(TLSSession.lastError(verify: SSL_get_verify_result(ssl)))
            }
            handshakeDone = true
            if let cert = SSL_get1_peer_certificate(ssl) {
                defer { X509_free(cert) }
                if SSL_get_verify_result(ssl) == X509_V_OK, let name = X509_get_subject_name(cert) {
                    var buf = [CChar](repeating: 0, count: 256)
                    let len = X509_NAME_get_text_by_NID(name, NID_commonName, &buf, Int32(buf.count))
                    if len > 0 { peerCN = String(decoding: buf.prefix(Int(len)).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
                }
            }
        }
        while true {
            let n = SSL_read(ssl, scratch.baseAddress, Int32(scratch.count))
            if n > 0 {
                plaintext(UnsafeRawBufferPointer(rebasing: scratch[0..<Int(n)]))
                continue
            }
            let e = SSL_get_error(ssl, n)
            if e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE { return .ok }
            if e == SSL_ERROR_ZERO_RETURN { return .closed }
            return .failed(TLSSession.lastError())
        }
    }

    /// Encrypt `plaintext` (memory BIOs take it all at once).
    func write(_ plaintext: UnsafeRawBufferPointer) -> Bool {
        guard !plaintext.isEmpty else { return true }
        return SSL_write(ssl, plaintext.baseAddress, Int32(plaintext.count)) == Int32(plaintext.count)
    }

    /// Ciphertext waiting to go to the pile (handshake records, alerts, data).
    var pendingOutput: Int { Int(BIO_ctrl_pending(wbio)) }

    /// Move pending ciphertext to the end of `out`.
    func takeOutput(into out: inout ByteBuffer) {
        let n = pendingOutput
        guard n > 0 else { return }
        out.write(max: n) { p in Int(max(0, BIO_read(wbio, p.baseAddress, Int32(n)))) }
    }

    /// Queue a close_notify (sent with the next flush).
    func shutdown() { if handshakeDone { _ = SSL_shutdown(ssl) } }

    var version: String { String(cString: SSL_get_version(ssl)) }

    /// The newest OpenSSL error on this thread, for the log line (and clear the queue).
    static func lastError(verify: Int = Int(X509_V_OK)) -> String {
        if verify != Int(X509_V_OK) {
            ERR_clear_error()
            return "certificate verification failed: \(String(cString: X509_verify_cert_error_string(verify)))"
        }
        let code = ERR_peek_last_error()
        ERR_clear_error()
        guard code != 0 else { return "protocol error" }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        return buf.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
