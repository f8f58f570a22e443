#include "iothub/sdk/tls_client.hpp"

#include <openssl/ssl.h>

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

}  // namespace iothub::sdk
