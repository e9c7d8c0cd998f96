//! The local DTLS certificate: generation, PEM import/export and the SDP fingerprint.

use std::sync::Arc;

use ::dtls::crypto::{Certificate, CryptoPrivateKey, CryptoPrivateKeyKind};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

use super::DtlsError;

/// A certificate and its private key, used for every DTLS handshake of this node.
///
/// Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct DtlsCertificate {
    inner: Arc<Inner>,
}

struct Inner {
    cert: Certificate,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for DtlsCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsCertificate")
            .field("fingerprint", &hex::encode(self.inner.fingerprint))
            .finish_non_exhaustive()
    }
}

impl DtlsCertificate {
    /// Generates a self-signed ECDSA P-256 certificate (what browsers expect for DTLS-SRTP).
    pub fn generate() -> Result<Self, DtlsError> {
        let key_pair = generate_p256()?;
        Self::from_parts(key_pair)
    }

    /// Loads a certificate (PEM, `CERTIFICATE` blocks; the first one is the leaf, any further
    /// ones are sent as the chain) and its PKCS#8 private key (PEM, `PRIVATE KEY`).
    ///
    /// ECDSA P-256 and Ed25519 keys are accepted (the dtls crate supports nothing else; browsers
    /// need ECDSA P-256). SEC1 `EC PRIVATE KEY` files must be converted to PKCS#8 first
    /// (`openssl pkcs8 -topk8 -nocrypt`).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, DtlsError> {
        let certs: Vec<Vec<u8>> = pem_blocks(cert_pem)?
            .into_iter()
            .filter(|(label, _)| label == "CERTIFICATE")
            .map(|(_, der)| der)
            .collect();
        if certs.is_empty() {
            return Err(DtlsError::Certificate(
                "no CERTIFICATE block in certificate PEM".into(),
            ));
        }
        let keys = pem_blocks(key_pem)?;
        let key_der = match keys
            .iter()
            .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        {
            Some((label, der)) if label == "PRIVATE KEY" => der.clone(),
            Some((label, _)) => {
                return Err(DtlsError::Certificate(format!(
                    "unsupported key format `{label}`: convert it to PKCS#8 (`PRIVATE KEY`)"
                )))
            }
            None => {
                return Err(DtlsError::Certificate(
                    "no PRIVATE KEY block in key PEM".into(),
                ))
            }
        };
        let (kind, public_key) = parse_pkcs8(&key_der)?;
        // The SubjectPublicKeyInfo of the leaf holds the raw public key: a cheap, exact way to
        // check that key and certificate belong together without an X.509 parser.
        if !contains(&certs[0], &public_key) {
            return Err(DtlsError::Certificate(
                "the private key does not match the certificate".into(),
            ));
        }
        let cert = Certificate {
            certificate: certs.into_iter().map(Into::into).collect(),
            private_key: CryptoPrivateKey {
                kind,
                serialized_der: key_der,
            },
        };
        Ok(Self::from_certificate(cert))
    }

    /// The certificate chain (`CERTIFICATE` blocks) and the PKCS#8 key (`PRIVATE KEY`) as PEM,
    /// in the format [`DtlsCertificate::from_pem`] reads.
    pub fn to_pem(&self) -> (String, String) {
        let mut cert_pem = String::new();
        for der in &self.inner.cert.certificate {
            cert_pem.push_str(&pem_encode("CERTIFICATE", der.as_ref()));
        }
        let key_pem = pem_encode("PRIVATE KEY", &self.inner.cert.private_key.serialized_der);
        (cert_pem, key_pem)
    }

    /// SHA-256 of the leaf certificate's DER, for `a=fingerprint:sha-256`.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.inner.fingerprint
    }

    /// DER of the leaf certificate.
    pub fn der(&self) -> &[u8] {
        self.inner.cert.certificate[0].as_ref()
    }

    /// A copy of the dtls crate's certificate, for a `dtls::config::Config`.
    pub(crate) fn dtls_certificate(&self) -> Certificate {
        self.inner.cert.clone()
    }

    fn from_parts(key_pair: (Vec<u8>, Vec<u8>)) -> Result<Self, DtlsError> {
        let (cert_der, key_der) = key_pair;
        let (kind, _) = parse_pkcs8(&key_der)?;
        Ok(Self::from_certificate(Certificate {
            certificate: vec![cert_der.into()],
            private_key: CryptoPrivateKey {
                kind,
                serialized_der: key_der,
            },
        }))
    }

    fn from_certificate(cert: Certificate) -> Self {
        let fingerprint = sha256(cert.certificate[0].as_ref());
        DtlsCertificate {
            inner: Arc::new(Inner { cert, fingerprint }),
        }
    }
}

/// SHA-256 of `data`.
pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Generates through the dtls crate (rcgen inside; ECDSA P-256 is rcgen's default) and returns
/// (certificate DER, PKCS#8 key DER). `generate_self_signed` unwraps internally; catch that so a
/// broken RNG is an error, not a crash of the caller.
fn generate_p256() -> Result<(Vec<u8>, Vec<u8>), DtlsError> {
    let cert =
        std::panic::catch_unwind(|| Certificate::generate_self_signed(vec!["rtcdn".to_owned()]))
            .map_err(|_| DtlsError::Certificate("certificate generation panicked".into()))?
            .map_err(|e| DtlsError::Certificate(e.to_string()))?;
    if !matches!(cert.private_key.kind, CryptoPrivateKeyKind::Ecdsa256(_)) {
        return Err(DtlsError::Certificate(
            "generated key is not ECDSA P-256".into(),
        ));
    }
    Ok((
        cert.certificate[0].as_ref().to_vec(),
        cert.private_key.serialized_der.clone(),
    ))
}

/// Parses a PKCS#8 key the dtls crate can sign with; returns it and its raw public key.
fn parse_pkcs8(der: &[u8]) -> Result<(CryptoPrivateKeyKind, Vec<u8>), DtlsError> {
    if let Ok(kp) =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, der, &SystemRandom::new())
    {
        let public = kp.public_key().as_ref().to_vec();
        return Ok((CryptoPrivateKeyKind::Ecdsa256(kp), public));
    }
    if let Ok(kp) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
        let public = kp.public_key().as_ref().to_vec();
        return Ok((CryptoPrivateKeyKind::Ed25519(kp), public));
    }
    Err(DtlsError::Certificate(
        "private key is not a PKCS#8 ECDSA P-256 or Ed25519 key".into(),
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- minimal PEM (RFC 7468) ----

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn pem_encode(label: &str, der: &[u8]) -> String {
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // B64 output is ASCII.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// All `-----BEGIN X-----`…`-----END X-----` blocks as (label, decoded bytes). Text outside
/// blocks (comments, `openssl` "explanatory text") is ignored.
fn pem_blocks(text: &str) -> Result<Vec<(String, Vec<u8>)>, DtlsError> {
    let bad = |m: &str| DtlsError::Certificate(format!("invalid PEM: {m}"));
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            if current.is_some() {
                return Err(bad("nested BEGIN"));
            }
            current = Some((label.to_owned(), String::new()));
        } else if let Some(label) = line
            .strip_prefix("-----END ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            let (begin, body) = current.take().ok_or_else(|| bad("END without BEGIN"))?;
            if begin != label {
                return Err(bad("BEGIN/END labels differ"));
            }
            blocks.push((
                begin,
                base64_decode(&body).ok_or_else(|| bad("bad base64"))?,
            ));
        } else if let Some((_, body)) = current.as_mut() {
            if line.contains(':') {
                return Err(bad("encrypted or RFC 1421 headers are not supported"));
            }
            body.push_str(line);
        }
    }
    if current.is_some() {
        return Err(bad("missing END"));
    }
    Ok(blocks)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding (1 leftover sextet is never valid).
    (bits < 6 && acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_roundtrip() {
        for len in 0..20 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let pem = pem_encode("X", &data);
            let blocks = pem_blocks(&pem).unwrap();
            assert_eq!(blocks, vec![("X".to_owned(), data)]);
        }
        assert!(base64_decode("A").is_none());
        assert!(base64_decode("A$==").is_none());
    }

    #[test]
    fn pem_roundtrip_same_fingerprint() {
        let cert = DtlsCertificate::generate().unwrap();
        let (cert_pem, key_pem) = cert.to_pem();
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = DtlsCertificate::from_pem(&cert_pem, &key_pem).unwrap();
        assert_eq!(back.fingerprint(), cert.fingerprint());
        assert_eq!(back.der(), cert.der());
        assert_eq!(back.fingerprint(), sha256(cert.der()));
        assert!(matches!(
            back.dtls_certificate().private_key.kind,
            CryptoPrivateKeyKind::Ecdsa256(_)
        ));
        // Same bytes with surrounding text and CRLF line ends.
        let noisy = format!("subject=CN=x\r\n{}", cert_pem.replace('\n', "\r\n"));
        assert_eq!(
            DtlsCertificate::from_pem(&noisy, &key_pem)
                .unwrap()
                .fingerprint(),
            cert.fingerprint()
        );
    }

    #[test]
    fn from_pem_rejects_mismatched_or_bad_input() {
        let a = DtlsCertificate::generate().unwrap();
        let b = DtlsCertificate::generate().unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        let (a_cert, _) = a.to_pem();
        let (_, b_key) = b.to_pem();
        assert!(matches!(
            DtlsCertificate::from_pem(&a_cert, &b_key),
            Err(DtlsError::Certificate(_))
        ));
        assert!(DtlsCertificate::from_pem("", &b_key).is_err());
        assert!(DtlsCertificate::from_pem(&a_cert, "").is_err());
        let sec1 = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let err = DtlsCertificate::from_pem(&a_cert, sec1).unwrap_err();
        assert!(err.to_string().contains("PKCS#8"), "{err}");
        let truncated = &a_cert[..a_cert.len() / 2];
        assert!(DtlsCertificate::from_pem(truncated, &b_key).is_err());
    }
}
