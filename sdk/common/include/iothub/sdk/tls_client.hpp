#pragma once

// TLS client setup shared by the device SDK (MQTT) and the service SDK (HTTPS), so that
// both trust the hub in the same way.

#include <boost/asio/ssl/context.hpp>
#include <string>

#include "iothub/status.hpp"

namespace iothub::sdk {

// A TLS client context the way both SDKs connect: TLS 1.2 or later, and the server's
// certificate must chain to a CA of `ca_file` (PEM, one or more certificates) or, when
// `ca_file` is empty, to the system trust store (OpenSSL's default paths). Checking that
// the certificate names the hub is per connection and up to the caller.
//
// Errors: ArgumentInvalid when the system trust store or `ca_file` cannot be loaded; the
// message names the file and is fit to show to the application.
Result<boost::asio::ssl::context> makeClientTlsContext(const std::string& ca_file);

// Before a handshake on `ssl`: the certificate must name `host` (an IP address SAN for an
// address, a DNS SAN otherwise) and, for DNS names only (RFC 6066 §3), SNI carries it.
void expectServerName(SSL* ssl, const std::string& host);

// Why a client handshake failed: the transport's reason plus OpenSSL's certificate
// verification result when that is what failed.
std::string handshakeFailureReason(SSL* ssl, const boost::system::error_code& ec);

}  // namespace iothub::sdk
