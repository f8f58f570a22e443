#include "iothub/sdk/tls_client.hpp"

#include <openssl/ssl.h>

#include <boost/asio/ip/address.hpp>
#include <fstream>

namespace iothub::sdk {

namespace ssl = boost::asio::ssl;

Result<ssl::context> makeClientTlsContext(const std::string& ca_file) {
  ssl::context context(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
  context.set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  if (ca_file.empty()) {
    context.set_default_verify_paths(ec);
    if (ec) {
      return Status(ErrorCode::ArgumentInvalid,
                    "Cannot load the system CA certificates: " + ec.message());
    }
    return context;
  }
  // Checked first so that a missing file gets a plain message instead of OpenSSL's.
  if (!std::ifstream(ca_file).good()) {
    return Status(ErrorCode::ArgumentInvalid, "Cannot read CA file '" + ca_file + "'");
  }
  context.load_verify_file(ca_file, ec);
  if (ec) {
    return Status(ErrorCode::ArgumentInvalid,
                  "Cannot load CA file '" + ca_file + "': " + ec.message());
  }
  return context;
}

void expectServerName(SSL* ssl, const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (!ec) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl, host.c_str());
    SSL_set1_host(ssl, host.c_str());
  }
}

std::string handshakeFailureReason(SSL* ssl, const boost::system::error_code& ec) {
  std::string reason = ec.message();
  long verify = SSL_get_verify_result(ssl);
  if (verify != X509_V_OK) reason += ": " + std::string(X509_verify_cert_error_string(verify));
  return reason;
}

}  // namespace iothub::sdk
