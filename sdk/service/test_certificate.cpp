#include "test_certificate.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <atomic>
#include <fstream>
#include <string>

#include "common/openssl_handles.hpp"
#include "common/status.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::service::testing {
namespace {

void addExtension(X509* cert, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  IOTHUB_CHECK(ext != nullptr, "bad certificate extension");
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

std::string bioText(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<std::size_t>(size));
}

}  // namespace

TestCertificate makeSelfSignedCertificate(const std::string& subject_alt_name) {
  PkeyPtr key(EVP_EC_gen("P-256"));
  IOTHUB_CHECK(key != nullptr, "EC key generation failed");
  X509Ptr cert(X509_new());
  X509_set_version(cert.get(), 2);
  static std::atomic<long> serial{1};
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("iothub test"), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  addExtension(cert.get(), NID_basic_constraints, "critical,CA:TRUE");
  addExtension(cert.get(), NID_subject_alt_name, subject_alt_name);
  IOTHUB_CHECK(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0, "certificate signing failed");

  TestCertificate out;
  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(cert_bio.get(), cert.get());
  out.cert_pem = bioText(cert_bio.get());
  BioPtr key_bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  out.key_pem = bioText(key_bio.get());
  return out;
}

std::string writeTempFile(const std::string& name, const std::string& text) {
  // One directory per test binary, removed with the files in it when the binary exits.
  static const ::iothub::testing::TempDir dir("iothub_service_sdk_test");
  static std::atomic<int> counter{0};
  auto path = dir.path() / (std::to_string(counter++) + "_" + name);
  std::ofstream(path) << text;
  return path.string();
}

}  // namespace iothub::service::testing
