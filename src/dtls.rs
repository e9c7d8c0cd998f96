//! DTLS handshake driver (dtls 0.17) fed by the reactor, and SRTP key export.
