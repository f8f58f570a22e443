#pragma once

#include <string>

namespace iothub::service::testing {

// A freshly generated self-signed P-256 certificate (CA:TRUE, so it can be its own trust
// anchor) with the given subjectAltName, e.g. "DNS:myhub.example,IP:127.0.0.1".
struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
};
TestCertificate makeSelfSignedCertificate(const std::string& subject_alt_name);

// Writes `text` to a new file under the test temp directory and returns its path.
std::string writeTempFile(const std::string& name, const std::string& text);

}  // namespace iothub::service::testing
