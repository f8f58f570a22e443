#include "iothub/device/connection_status.hpp"

namespace iothub::device {

std::string_view toString(ConnectionStatus status) {
  switch (status) {
    case ConnectionStatus::Connected:
      return "Connected";
    case ConnectionStatus::DisconnectedRetrying:
      return "DisconnectedRetrying";
    case ConnectionStatus::Disconnected:
      return "Disconnected";
  }
  return "Unknown";
}

std::string_view toString(ConnectionStatusReason reason) {
  switch (reason) {
    case ConnectionStatusReason::ConnectionOk:
      return "ConnectionOk";
    case ConnectionStatusReason::TokenRenewal:
      return "TokenRenewal";
    case ConnectionStatusReason::CommunicationError:
      return "CommunicationError";
    case ConnectionStatusReason::BadCredential:
      return "BadCredential";
    case ConnectionStatusReason::RetryExpired:
      return "RetryExpired";
    case ConnectionStatusReason::ClientClose:
      return "ClientClose";
  }
  return "Unknown";
}

}  // namespace iothub::device
