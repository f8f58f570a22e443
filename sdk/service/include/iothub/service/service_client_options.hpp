#pragma once

#include <chrono>
#include <string>

namespace iothub::service {

// How a service client reaches the hub. The HostName of the connection string always names
// the hub: it is the Host header, the SAS resource and the name the server certificate must
// carry. `endpoint` only changes where the TCP connection goes.
struct ServiceClientOptions {
  // PEM file of the CA(s) that sign the hub's certificate; empty = the system's default
  // trust store (OpenSSL default paths).
  std::string ca_file;
  // Optional override of the address to connect to, "https://127.0.0.1:8443" or
  // "http://127.0.0.1:8080" (plain HTTP: for local tests only). Empty = "https://<HostName>"
  // on port 443 (or on the port HostName carries).
  std::string endpoint;
  // Deadline for one request: connect, TLS handshake, sending and the whole response.
  // A request may set its own (HttpRequest::timeout); direct methods do.
  std::chrono::seconds timeout{60};
};

}  // namespace iothub::service
