#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/socket_base.hpp>
#include <cstdint>
#include <string>

#include "common/status.hpp"

namespace iothub::transport {

// Opens `acceptor` on bind_address:port (SO_REUSEADDR) and listens, so that "port in use"
// is reported at startup. Returns the bound port (the kernel's choice for port 0). Errors:
// ServiceUnavailable naming the listener (`name`), the address and the system's reason.
inline Result<std::uint16_t> bindAndListen(boost::asio::ip::tcp::acceptor& acceptor,
                                           const std::string& name, const std::string& bind_address,
                                           std::uint16_t port) {
  namespace asio = boost::asio;
  const std::string where = name + " listener on " + bind_address + ":" + std::to_string(port);
  boost::system::error_code ec;
  auto address = asio::ip::make_address(bind_address, ec);
  if (ec) return Status(ErrorCode::ServiceUnavailable, "cannot start " + where + ": bad address");
  asio::ip::tcp::endpoint endpoint(address, port);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Status(ErrorCode::ServiceUnavailable, "cannot start " + where + ": " + ec.message());
  return acceptor.local_endpoint(ec).port();
}

}  // namespace iothub::transport
