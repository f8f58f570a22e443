#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "common/status.hpp"

namespace iothub::server {

// Paths of the development PKI under DIR/tls/. All four exist when returned by
// ensureDevelopmentCertificates().
struct TlsFiles {
  std::filesystem::path ca_cert;      // ca.pem: the development CA; what clients trust
  std::filesystem::path ca_key;       // ca.key: its private key (PKCS#8 PEM, mode 0600)
  std::filesystem::path server_cert;  // server.pem: server certificate followed by ca.pem
  std::filesystem::path server_key;   // server.key: server private key (PKCS#8 PEM, mode 0600)
};

// Makes sure `data_dir`/tls/ holds a development CA and a server certificate for `host_name`
// and returns their paths. Intended to be called once at start-up, before accepting
// connections; it does blocking file I/O. Not safe to run concurrently on the same
// directory from several processes.
//
// - The CA (ca.pem + ca.key: ECDSA P-256, 10 years) is created only when ca.pem is missing
//   (an orphaned ca.key without ca.pem is overwritten: no client can trust a CA whose
//   certificate was never written). An existing CA is never replaced, because clients
//   trust it.
// - server.pem/server.key (ECDSA P-256, 825 days, never beyond the CA's expiry) are
//   re-issued, with a fresh key, when missing, when the certificate expires within 30
//   days of clock.now() or is not yet valid, when it does not cover `host_name`, when it
//   was not issued by the current CA, or when server.key does not match it.
// - SANs: `host_name` (an IP address SAN when it parses as IPv4/IPv6, otherwise DNS),
//   DNS "localhost", IP 127.0.0.1 and IP ::1. The subject CN is `host_name`.
// - Files are replaced atomically (temporary file + rename); key files get mode 0600.
//   Existing files that are still valid are left byte-identical.
//
// Errors (nothing here crashes):
// - ArgumentInvalid: `host_name` is neither an IP address nor a syntactically valid DNS name.
// - ServerError: the directory cannot be created or written; a file exists but cannot be
//   read or parsed (the message names it); ca.pem exists without ca.key; ca.key does not
//   match ca.pem; ca.pem is not a CA certificate or has expired. The fix for the CA
//   cases is to delete DIR/tls/ (clients must then trust the new ca.pem).
//
// `extra_names` (a cluster node's own address, docs/cluster.md "Certificates") are added to
// the SANs after `host_name`, and a certificate that does not cover one of them is
// re-issued. Each must be an IP address or a valid DNS name (ArgumentInvalid otherwise).
Result<TlsFiles> ensureDevelopmentCertificates(const std::filesystem::path& data_dir,
                                               std::string_view host_name, const Clock& clock,
                                               const std::vector<std::string>& extra_names = {});

// A development CA as PEM texts, for the nodes of a cluster to share through the store.
struct DevelopmentCa {
  std::string cert_pem;
  std::string key_pem;  // PKCS#8, unencrypted
};

// The CA in `data_dir`/tls/ if there is a valid one (errors as above when it is not), else
// a new one that is not written anywhere: what a cluster node proposes as the shared CA.
Result<DevelopmentCa> localOrNewDevelopmentCa(const std::filesystem::path& data_dir,
                                              const Clock& clock);

// Makes `ca` the CA of `data_dir`/tls/ (ca.pem, ca.key), replacing a different one (logged:
// clients must then trust the new ca.pem; the server certificate is re-issued by the next
// ensureDevelopmentCertificates, since the old one was not issued by the current CA).
// Errors: ServerError when `ca` is not a valid, unexpired CA with its key; write errors.
Status installDevelopmentCa(const std::filesystem::path& data_dir, const DevelopmentCa& ca,
                            const Clock& clock);

}  // namespace iothub::server
