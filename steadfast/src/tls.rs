//! TLS 1.3 for clients and servers (feature `tls`): rustls with the ring provider, TLS 1.3
//! only, certificates from PEM, trust from a CA file or the system roots, optional mutual TLS.
//!
//! A steadfast session resumes over TLS exactly as over TCP: the TLS connection is per TCP
//! connection; the session and its resume token live above it.
//!
//! For anything the constructors here do not cover (other key types or providers, client
//! certificate revocation, session tickets, …) build a rustls configuration yourself and pass
//! it to [`TlsServer::from_config`] or [`TlsClient::from_config`]; [`rustls`] is re-exported so
//! the version matches.
//!
//! ```no_run
//! use steadfast::tls::{TlsClient, TlsServer};
//! use steadfast::{ClientConfig, ServerConfig};
//!
//! # fn f() -> Result<(), steadfast::tls::TlsError> {
//! let server = ServerConfig::default().tls(TlsServer::from_pem_files("server.pem", "server.key")?);
//! let client = ClientConfig::default().tls(TlsClient::from_ca_file("ca.pem")?);
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};

/// The rustls this crate is built with: configurations given to [`TlsServer::from_config`] and
/// [`TlsClient::from_config`] must come from this version.
pub use rustls;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// PEM data held no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    /// The server name is neither a DNS name nor an IP address.
    #[error("invalid server name {0:?}")]
    ServerName(String),
    /// A configuration steadfast cannot use as given (no TLS 1.3 cipher suite, or an operation
    /// that would rebuild a configuration the caller built).
    #[error("unsupported TLS configuration: {0}")]
    Unsupported(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// steadfast speaks TLS 1.3 only. rustls does not let a configuration's enabled protocol
/// versions be read back, so what can be checked is checked: TLS 1.3 needs a TLS 1.3 cipher
/// suite in the provider.
fn require_tls13(provider: &CryptoProvider) -> Result<(), TlsError> {
    if provider
        .cipher_suites
        .iter()
        .any(|cs| cs.version().version == ProtocolVersion::TLSv1_3)
    {
        return Ok(());
    }
    Err(TlsError::Unsupported(
        "the crypto provider has no TLS 1.3 cipher suite; steadfast requires TLS 1.3".into(),
    ))
}

fn read(path: impl AsRef<Path>) -> Result<Vec<u8>, TlsError> {
    let path = path.as_ref();
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem(format!("bad certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem("no certificate in PEM data".into()));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| TlsError::Pem(format!("bad private key PEM: {e}")))
}

fn roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(pem)? {
        store.add(c)?;
    }
    Ok(store)
}

/// A server's TLS settings: its certificate chain and key, and optionally the CA whose client
/// certificates it requires (mutual TLS).
#[derive(Clone, Debug)]
pub struct TlsServer {
    pub(crate) config: Arc<ServerConfig>,
}

impl TlsServer {
    /// From PEM files: the certificate chain (leaf first) and the private key.
    ///
    /// # Errors
    /// [`TlsError`] if a file is unreadable or holds no usable certificate or key.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert)?, &read(key)?, None)
    }

    /// From PEM data; with `client_ca`, clients must present a certificate signed by it.
    ///
    /// # Errors
    /// [`TlsError`] if the PEM data holds no usable certificate or key.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        client_ca: Option<&[u8]>,
    ) -> Result<Self, TlsError> {
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let builder = match client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                        .build()
                        .map_err(|e| TlsError::Verifier(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(certs(cert_pem)?, key(key_pem)?)?;
        Ok(TlsServer {
            config: Arc::new(config),
        })
    }

    /// Uses the caller's own rustls configuration as it is: certificate resolver, client
    /// certificate verifier (mutual TLS: the verified certificate shows in
    /// [`Peer::certificate`](crate::Peer::certificate)), provider, session storage.
    ///
    /// steadfast requires TLS 1.3. Build the configuration for TLS 1.3 only, with
    /// `builder_with_protocol_versions(&[&rustls::version::TLS13])` (or
    /// `.with_protocol_versions(..)`), as the other constructors here do. A configuration whose
    /// crypto provider has no TLS 1.3 cipher suite is refused. rustls does not let the enabled
    /// versions be read back, so one that also enables TLS 1.2 cannot be refused: it is used as
    /// given and would accept a client offering only TLS 1.2. (TLS 1.2 exists only when
    /// rustls's `tls12` feature is enabled somewhere in the build; steadfast does not enable
    /// it.) ALPN is not used by steadfast; whatever the configuration sets is left alone.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use steadfast::tls::rustls::pki_types::pem::PemObject;
    /// use steadfast::tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    /// use steadfast::tls::{rustls, TlsServer};
    /// use steadfast::ServerConfig;
    ///
    /// # fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let chain = CertificateDer::pem_file_iter("server.pem")?.collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("server.key")?;
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ServerConfig::builder_with_provider(provider)
    ///     .with_protocol_versions(&[&rustls::version::TLS13])?
    ///     .with_no_client_auth()
    ///     .with_single_cert(chain, key)?;
    /// let server = ServerConfig::default().tls(TlsServer::from_config(Arc::new(config))?);
    /// # let _ = server;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TlsError::Unsupported`] if the configuration's provider has no TLS 1.3 cipher suite.
    pub fn from_config(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        require_tls13(config.crypto_provider())?;
        Ok(TlsServer { config })
    }

    /// Requires client certificates signed by the CA in this PEM file (mutual TLS).
    ///
    /// # Errors
    /// [`TlsError`] if a file is unreadable or unusable.
    pub fn from_pem_files_with_client_ca(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        client_ca: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Self::from_pem(&read(cert)?, &read(key)?, Some(&read(client_ca)?))
    }
}

/// A client's TLS settings: whom it trusts, optionally its own certificate (mutual TLS), and
/// the name it checks the server's certificate against (default: the host part of the
/// address it connects to; DNS names and IP addresses both work).
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// `None` for a configuration the caller built ([`TlsClient::from_config`]).
    roots: Option<Arc<RootCertStore>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    pub(crate) server_name: Option<String>,
    pub(crate) config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts the CA certificates in this PEM file.
    ///
    /// # Errors
    /// [`TlsError`] if the file is unreadable or holds no certificate.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        Self::from_ca_pem(&read(path)?)
    }

    /// Trusts the CA certificates in this PEM data.
    ///
    /// # Errors
    /// [`TlsError`] if it holds no usable certificate.
    pub fn from_ca_pem(pem: &[u8]) -> Result<Self, TlsError> {
        Self::with_roots(roots(pem)?)
    }

    /// Trusts the operating system's root certificates.
    ///
    /// # Errors
    /// [`TlsError`] if none could be loaded.
    pub fn with_system_roots() -> Result<Self, TlsError> {
        let mut store = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = store.add(c);
        }
        if store.is_empty() {
            return Err(TlsError::Pem("no system root certificates found".into()));
        }
        Self::with_roots(store)
    }

    fn with_roots(store: RootCertStore) -> Result<Self, TlsError> {
        let roots = Arc::new(store);
        let config = build_client(&roots, None)?;
        Ok(TlsClient {
            roots: Some(roots),
            identity: None,
            server_name: None,
            config,
        })
    }

    /// Uses the caller's own rustls configuration as it is: trust (roots or a custom
    /// verifier), client certificate for mutual TLS, provider, resumption.
    ///
    /// The name checked against the server's certificate is chosen as for the other
    /// constructors: the host part of the address connected to, or the one given to
    /// [`server_name`](Self::server_name), which works on a client built here too.
    /// [`client_certificate`](Self::client_certificate) does not (it would rebuild the
    /// configuration): put the client certificate into the configuration instead.
    ///
    /// steadfast requires TLS 1.3. Build the configuration for TLS 1.3 only, with
    /// `builder_with_protocol_versions(&[&rustls::version::TLS13])` (or
    /// `.with_protocol_versions(..)`). A configuration whose crypto provider has no TLS 1.3
    /// cipher suite is refused. rustls does not let the enabled versions be read back, so one
    /// that also enables TLS 1.2 cannot be refused: it is used as given and would settle for
    /// TLS 1.2 with a server offering nothing newer. (TLS 1.2 exists only when rustls's
    /// `tls12` feature is enabled somewhere in the build; steadfast does not enable it.)
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use steadfast::tls::rustls::pki_types::pem::PemObject;
    /// use steadfast::tls::rustls::pki_types::CertificateDer;
    /// use steadfast::tls::{rustls, TlsClient};
    /// use steadfast::ClientConfig;
    ///
    /// # fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut roots = rustls::RootCertStore::empty();
    /// for ca in CertificateDer::pem_file_iter("ca.pem")? {
    ///     roots.add(ca?)?;
    /// }
    /// let provider = Arc::new(rustls::crypto::ring::default_provider());
    /// let config = rustls::ClientConfig::builder_with_provider(provider)
    ///     .with_protocol_versions(&[&rustls::version::TLS13])?
    ///     .with_root_certificates(roots)
    ///     .with_no_client_auth();
    /// let tls = TlsClient::from_config(Arc::new(config))?.server_name("steadfast.example")?;
    /// let client = ClientConfig::default().tls(tls);
    /// # let _ = client;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`TlsError::Unsupported`] if the configuration's provider has no TLS 1.3 cipher suite.
    pub fn from_config(config: Arc<ClientConfig>) -> Result<Self, TlsError> {
        require_tls13(config.crypto_provider())?;
        Ok(TlsClient {
            roots: None,
            identity: None,
            server_name: None,
            config,
        })
    }

    /// Presents this certificate chain and key to servers that ask (mutual TLS).
    ///
    /// # Errors
    /// [`TlsError`] if the PEM data is unusable; [`TlsError::Unsupported`] on a client built
    /// with [`from_config`](Self::from_config) (put the certificate into that configuration).
    pub fn client_certificate(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let Some(roots) = &self.roots else {
            return Err(TlsError::Unsupported(
                "client_certificate on a client built from a rustls configuration: \
                 give the certificate in that configuration"
                    .into(),
            ));
        };
        let identity = (certs(cert_pem)?, Arc::new(key(key_pem)?));
        self.config = build_client(roots, Some(&identity))?;
        self.identity = Some(identity);
        Ok(self)
    }

    /// Checks the server's certificate against this name instead of the address's host.
    ///
    /// # Errors
    /// [`TlsError::ServerName`] if it is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<Self, TlsError> {
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.into()))?;
        self.server_name = Some(name.to_owned());
        Ok(self)
    }

    /// The name to verify for a connection to `addr` (host:port).
    pub(crate) fn name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        let host = match &self.server_name {
            Some(n) => n.clone(),
            None => host_of(addr).to_owned(),
        };
        ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host))
    }
}

fn build_client(
    roots: &Arc<RootCertStore>,
    identity: Option<&(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone());
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain.clone(), key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// "host:port" → "host"; "[::1]:port" → "::1".
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return &rest[..end];
    }
    match addr.rfind(':') {
        Some(i) => &addr[..i],
        None => addr,
    }
}

/// Development certificates: a CA, a server certificate for the given DNS names and IP
/// addresses, and a client certificate (for mutual TLS), all signed by the CA, in PEM.
/// For tests and local setups only: the keys are generated in memory and not protected.
#[cfg(feature = "dev-certs")]
#[derive(Clone)]
pub struct DevCertificates {
    /// The CA certificate (give it to clients as their trust root, and to servers as the
    /// client CA for mutual TLS).
    pub ca_pem: String,
    /// The CA's private key: whoever holds it can issue certificates every holder of
    /// `ca_pem` trusts. Keep it to issue more ([`DevCertificates::issue`]), privately.
    pub ca_key_pem: String,
    /// The server's certificate.
    pub server_cert_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
    /// A client certificate (common name "steadfast client").
    pub client_cert_pem: String,
    /// Its private key.
    pub client_key_pem: String,
}

#[cfg(feature = "dev-certs")]
impl std::fmt::Debug for DevCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCertificates(<keys redacted>)")
    }
}

#[cfg(feature = "dev-certs")]
impl DevCertificates {
    /// Generates a CA and certificates for `names` (DNS names or IP addresses, e.g.
    /// `localhost`, `127.0.0.1`).
    ///
    /// # Errors
    /// [`TlsError::ServerName`] for a name that is neither a DNS name nor an IP address,
    /// [`TlsError::Pem`] if generation fails.
    pub fn generate(names: &[&str]) -> Result<Self, TlsError> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyUsagePurpose};
        check_names(names)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "steadfast development CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(gen_err)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca, ca_key);
        Self::leaves(ca_cert.pem(), ca_key_pem, &issuer, names)
    }

    /// Issues a server certificate for `names` and a client certificate from an existing CA
    /// (its certificate and private key in PEM, as [`DevCertificates::generate`] made them):
    /// every client that trusts that CA trusts the new server.
    ///
    /// # Errors
    /// [`TlsError::ServerName`] for a name that is neither a DNS name nor an IP address,
    /// [`TlsError::Pem`] if the CA certificate or key cannot be read or generation fails.
    pub fn issue(ca_pem: &str, ca_key_pem: &str, names: &[&str]) -> Result<Self, TlsError> {
        check_names(names)?;
        let key = rcgen::KeyPair::from_pem(ca_key_pem)
            .map_err(|e| TlsError::Pem(format!("the CA key: {e}")))?;
        let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, key)
            .map_err(|e| TlsError::Pem(format!("the CA certificate: {e}")))?;
        Self::leaves(ca_pem.to_owned(), ca_key_pem.to_owned(), &issuer, names)
    }

    /// A server certificate for `names` and a client certificate, signed by `issuer`.
    fn leaves(
        ca_pem: String,
        ca_key_pem: String,
        issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
        names: &[&str],
    ) -> Result<Self, TlsError> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut server = CertificateParams::new(names.clone()).map_err(gen_err)?;
        server.distinguished_name.push(
            DnType::CommonName,
            names
                .first()
                .cloned()
                .unwrap_or_else(|| "steadfast server".into()),
        );
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate().map_err(gen_err)?;
        let server_cert = server.signed_by(&server_key, issuer).map_err(gen_err)?;

        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        client
            .distinguished_name
            .push(DnType::CommonName, "steadfast client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client.use_authority_key_identifier_extension = true;
        let client_key = KeyPair::generate().map_err(gen_err)?;
        let client_cert = client.signed_by(&client_key, issuer).map_err(gen_err)?;
        Ok(DevCertificates {
            ca_pem,
            ca_key_pem,
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }
}

#[cfg(feature = "dev-certs")]
fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Pem(format!("certificate generation: {e}"))
}

/// Refuses a name a TLS client could never check a certificate against (`bad name!`,
/// `http://host`, an empty one), naming it.
#[cfg(feature = "dev-certs")]
fn check_names(names: &[&str]) -> Result<(), TlsError> {
    for n in names {
        ServerName::try_from(*n).map_err(|_| TlsError::ServerName((*n).to_owned()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_handles_names_and_addresses() {
        assert_eq!(super::host_of("localhost:7000"), "localhost");
        assert_eq!(super::host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(super::host_of("[::1]:7000"), "::1");
    }
}
