#include "server/tls_bootstrap.hpp"

#include <gtest/gtest.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "common/openssl_handles.hpp"
#include "tests/support/temp_dir.hpp"

namespace iothub::server {
namespace {

namespace fs = std::filesystem;
using std::chrono::days;

using SslContextPtr = std::unique_ptr<SSL_CTX, OpensslDeleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OpensslDeleter<SSL_free>>;

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void writeFile(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

std::vector<X509Ptr> loadCertificates(const fs::path& path) {
  std::string pem = readFile(path);
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::vector<X509Ptr> certs;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certs.emplace_back(cert);
  }
  ERR_clear_error();
  return certs;
}

X509Ptr loadCertificate(const fs::path& path) {
  auto certs = loadCertificates(path);
  return certs.empty() ? nullptr : std::move(certs.front());
}

PkeyPtr loadKey(const fs::path& path) {
  std::string pem = readFile(path);
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return PkeyPtr(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
}

unsigned fileMode(const fs::path& path) {
  struct stat info {};
  EXPECT_EQ(::stat(path.c_str(), &info), 0) << path;
  return info.st_mode & 0777;
}

// X509_verify_cert of server.pem's leaf (with the rest of server.pem as untrusted chain)
// against ca.pem as the only trust anchor, for TLS server use, at `at`.
int verifyServerCertificate(const TlsFiles& files, SystemTime at) {
  auto chain = loadCertificates(files.server_cert);
  X509Ptr ca = loadCertificate(files.ca_cert);
  if (chain.empty() || !ca) return X509_V_ERR_UNSPECIFIED;
  StorePtr store(X509_STORE_new());
  X509_STORE_add_cert(store.get(), ca.get());
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (std::size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
  StoreContextPtr context(X509_STORE_CTX_new());
  X509_STORE_CTX_init(context.get(), store.get(), chain.front().get(), untrusted);
  X509_STORE_CTX_set_purpose(context.get(), X509_PURPOSE_SSL_SERVER);
  X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(context.get());
  X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT);
  X509_VERIFY_PARAM_set_time(param, std::chrono::system_clock::to_time_t(at));
  int ok = X509_verify_cert(context.get());
  int error = X509_STORE_CTX_get_error(context.get());
  sk_X509_free(untrusted);
  ERR_clear_error();
  return ok == 1 ? X509_V_OK : (error == X509_V_OK ? X509_V_ERR_UNSPECIFIED : error);
}

bool coversDns(X509* cert, const std::string& name) {
  return X509_check_host(cert, name.data(), name.size(), X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                         nullptr) == 1;
}

bool coversIp(X509* cert, const std::string& address) {
  return X509_check_ip_asc(cert, address.c_str(), 0) == 1;
}

std::string commonName(X509* cert) {
  char buffer[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buffer, sizeof buffer);
  return buffer;
}

// Days and seconds from `from` to the certificate time `to`.
std::pair<int, int> timeFrom(SystemTime from, const ASN1_TIME* to) {
  Asn1TimePtr start(ASN1_TIME_set(nullptr, std::chrono::system_clock::to_time_t(from)));
  int day_count = 0;
  int second_count = 0;
  EXPECT_EQ(ASN1_TIME_diff(&day_count, &second_count, start.get(), to), 1);
  return {day_count, second_count};
}

std::vector<std::string> subjectAltNames(X509* cert) {
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  std::vector<std::string> out;
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
    int type = 0;
    const ASN1_STRING* value =
        static_cast<const ASN1_STRING*>(GENERAL_NAME_get0_value(name, &type));
    std::string bytes(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                      static_cast<std::size_t>(ASN1_STRING_length(value)));
    if (type == GEN_DNS) {
      out.push_back("DNS:" + bytes);
    } else if (type == GEN_IPADD) {
      std::string text = "IP:";
      for (unsigned char b : bytes) text += std::to_string(b) + ".";
      text.pop_back();
      out.push_back(text);
    }
  }
  return out;
}

class TlsBootstrapTest : public ::testing::Test {
 protected:
  // The owner regains full access to the root so that dir_ can remove it.
  void TearDown() override {
    std::error_code ignored;
    fs::permissions(root_, fs::perms::owner_all, fs::perm_options::add, ignored);
  }

  TlsFiles ensure(std::string_view host = "localhost") {
    auto files = ensureDevelopmentCertificates(data_dir_, host, clock_);
    EXPECT_TRUE(files.isOk()) << files.status().toString();
    return files.isOk() ? *files : TlsFiles{};
  }

  struct Snapshot {
    std::string ca_cert, ca_key, server_cert, server_key;
  };
  static Snapshot snapshot(const TlsFiles& files) {
    return {readFile(files.ca_cert), readFile(files.ca_key), readFile(files.server_cert),
            readFile(files.server_key)};
  }

  // Real time, so that TLS handshakes (which check validity against the real clock) work.
  FakeClock clock_{std::chrono::system_clock::now()};
  iothub::testing::TempDir dir_{"tls_bootstrap_test"};
  const fs::path root_ = dir_.path();
  fs::path data_dir_ = root_ / "data";
};

TEST_F(TlsBootstrapTest, CreatesFourFilesWithOwnerOnlyKeyFiles) {
  TlsFiles files = ensure();
  EXPECT_EQ(files.ca_cert, data_dir_ / "tls" / "ca.pem");
  EXPECT_EQ(files.ca_key, data_dir_ / "tls" / "ca.key");
  EXPECT_EQ(files.server_cert, data_dir_ / "tls" / "server.pem");
  EXPECT_EQ(files.server_key, data_dir_ / "tls" / "server.key");
  for (const auto& path : {files.ca_cert, files.ca_key, files.server_cert, files.server_key}) {
    EXPECT_TRUE(fs::is_regular_file(path)) << path;
  }
  EXPECT_EQ(fileMode(files.ca_key), 0600u);
  EXPECT_EQ(fileMode(files.server_key), 0600u);
  EXPECT_EQ(fileMode(files.ca_cert), 0600u);
  EXPECT_EQ(fileMode(files.server_cert), 0600u);
  // No temporary files are left behind.
  EXPECT_EQ(std::distance(fs::directory_iterator(data_dir_ / "tls"), fs::directory_iterator()), 4);
}

TEST_F(TlsBootstrapTest, ServerCertificateVerifiesAgainstCaForTlsServerPurpose) {
  TlsFiles files = ensure("hub.iothub.test");
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  // Validity starts slightly in the past to tolerate clients whose clocks lag.
  EXPECT_EQ(verifyServerCertificate(files, clock_.now() - std::chrono::minutes(5)), X509_V_OK);
}

TEST_F(TlsBootstrapTest, CoversHostNameAndLoopbackNamesButNothingElse) {
  TlsFiles files = ensure("hub.iothub.test");
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(server);
  EXPECT_TRUE(coversDns(server.get(), "hub.iothub.test"));
  EXPECT_TRUE(coversDns(server.get(), "HUB.iothub.test"));
  EXPECT_TRUE(coversDns(server.get(), "localhost"));
  EXPECT_TRUE(coversIp(server.get(), "127.0.0.1"));
  EXPECT_TRUE(coversIp(server.get(), "::1"));
  EXPECT_FALSE(coversDns(server.get(), "evil.example"));
  EXPECT_FALSE(coversDns(server.get(), "iothub.test"));
  EXPECT_FALSE(coversIp(server.get(), "10.0.0.1"));
  EXPECT_EQ(subjectAltNames(server.get()),
            (std::vector<std::string>{"DNS:hub.iothub.test", "DNS:localhost", "IP:127.0.0.1",
                                      "IP:0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1"}));
  EXPECT_EQ(commonName(server.get()), "hub.iothub.test");
}

TEST_F(TlsBootstrapTest, LocalhostIsNotListedTwice) {
  TlsFiles files = ensure("LocalHost");
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(server);
  EXPECT_EQ(subjectAltNames(server.get()).size(), 3u);
  EXPECT_TRUE(coversDns(server.get(), "localhost"));
}

TEST_F(TlsBootstrapTest, UsesEcdsaP256KeysAndSha256Signatures) {
  TlsFiles files = ensure();
  for (const auto& key_path : {files.ca_key, files.server_key}) {
    PkeyPtr key = loadKey(key_path);
    ASSERT_TRUE(key) << key_path;
    EXPECT_EQ(EVP_PKEY_get_base_id(key.get()), EVP_PKEY_EC);
    char group[64] = {};
    ASSERT_EQ(EVP_PKEY_get_group_name(key.get(), group, sizeof group, nullptr), 1);
    EXPECT_STREQ(group, "prime256v1");
  }
  for (const auto& cert_path : {files.ca_cert, files.server_cert}) {
    X509Ptr cert = loadCertificate(cert_path);
    ASSERT_TRUE(cert);
    EXPECT_EQ(X509_get_signature_nid(cert.get()), NID_ecdsa_with_SHA256);
    EXPECT_EQ(X509_get_version(cert.get()), X509_VERSION_3);
  }
  X509Ptr server = loadCertificate(files.server_cert);
  PkeyPtr server_key = loadKey(files.server_key);
  EXPECT_EQ(X509_check_private_key(server.get(), server_key.get()), 1);
}

TEST_F(TlsBootstrapTest, CaAndServerCertificatesHaveTheRequiredExtensions) {
  TlsFiles files = ensure();
  X509Ptr ca = loadCertificate(files.ca_cert);
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(ca && server);

  EXPECT_EQ(commonName(ca.get()).rfind("iothub development CA ", 0), 0u) << commonName(ca.get());
  EXPECT_GT(commonName(ca.get()).size(), std::string("iothub development CA ").size());
  EXPECT_NE(X509_check_ca(ca.get()), 0);
  int index = X509_get_ext_by_NID(ca.get(), NID_basic_constraints, -1);
  ASSERT_GE(index, 0);
  EXPECT_EQ(X509_EXTENSION_get_critical(X509_get_ext(ca.get(), index)), 1);
  EXPECT_EQ(X509_get_key_usage(ca.get()), static_cast<uint32_t>(KU_KEY_CERT_SIGN | KU_CRL_SIGN));
  ASSERT_NE(X509_get0_subject_key_id(ca.get()), nullptr);

  EXPECT_EQ(X509_check_ca(server.get()), 0);
  EXPECT_EQ(X509_get_key_usage(server.get()), static_cast<uint32_t>(KU_DIGITAL_SIGNATURE));
  EXPECT_EQ(X509_get_extended_key_usage(server.get()), static_cast<uint32_t>(XKU_SSL_SERVER));
  ASSERT_NE(X509_get0_authority_key_id(server.get()), nullptr);
  EXPECT_EQ(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(server.get()),
                                  X509_get0_subject_key_id(ca.get())),
            0);
}

TEST_F(TlsBootstrapTest, ValidityFollowsTheInjectedClock) {
  clock_.set(SystemTime{std::chrono::seconds{1700000000}});
  TlsFiles files = ensure();
  X509Ptr ca = loadCertificate(files.ca_cert);
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(ca && server);
  auto [server_before_days, server_before_seconds] =
      timeFrom(clock_.now(), X509_get0_notBefore(server.get()));
  EXPECT_EQ(server_before_days, 0);
  EXPECT_LT(server_before_seconds, 0);
  EXPECT_GE(server_before_seconds, -24 * 3600);
  EXPECT_EQ(timeFrom(clock_.now(), X509_get0_notAfter(server.get())), std::make_pair(825, 0));
  EXPECT_EQ(timeFrom(clock_.now(), X509_get0_notAfter(ca.get())), std::make_pair(3650, 0));
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
}

TEST_F(TlsBootstrapTest, SerialNumbersAreRandomPositiveAndLarge) {
  TlsFiles files = ensure();
  X509Ptr ca = loadCertificate(files.ca_cert);
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(ca && server);
  BignumPtr ca_serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(ca.get()), nullptr));
  BignumPtr server_serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(server.get()), nullptr));
  EXPECT_FALSE(BN_is_negative(ca_serial.get()));
  EXPECT_FALSE(BN_is_negative(server_serial.get()));
  // 128 random bits: fewer than 96 significant bits has probability 2^-32.
  EXPECT_GT(BN_num_bits(ca_serial.get()), 96);
  EXPECT_LE(BN_num_bits(ca_serial.get()), 128);
  EXPECT_GT(BN_num_bits(server_serial.get()), 96);
  EXPECT_NE(BN_cmp(ca_serial.get(), server_serial.get()), 0);
}

TEST_F(TlsBootstrapTest, ServerPemIsTheFullChain) {
  TlsFiles files = ensure();
  auto chain = loadCertificates(files.server_cert);
  X509Ptr ca = loadCertificate(files.ca_cert);
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(X509_cmp(chain[1].get(), ca.get()), 0);
  EXPECT_EQ(X509_check_issued(ca.get(), chain[0].get()), X509_V_OK);
}

TEST_F(TlsBootstrapTest, SecondCallLeavesAllFilesByteIdentical) {
  TlsFiles files = ensure();
  Snapshot before = snapshot(files);
  clock_.advance(days(30));
  TlsFiles again = ensure();
  Snapshot after = snapshot(again);
  EXPECT_EQ(after.ca_cert, before.ca_cert);
  EXPECT_EQ(after.ca_key, before.ca_key);
  EXPECT_EQ(after.server_cert, before.server_cert);
  EXPECT_EQ(after.server_key, before.server_key);
  EXPECT_EQ(ERR_peek_error(), 0u) << "the OpenSSL error queue must be left empty";
}

TEST_F(TlsBootstrapTest, DifferentHostNameReissuesOnlyTheServerCertificate) {
  TlsFiles files = ensure("first.iothub.test");
  Snapshot before = snapshot(files);
  files = ensure("second.iothub.test");
  Snapshot after = snapshot(files);
  EXPECT_EQ(after.ca_cert, before.ca_cert);
  EXPECT_EQ(after.ca_key, before.ca_key);
  EXPECT_NE(after.server_cert, before.server_cert);
  EXPECT_NE(after.server_key, before.server_key);
  X509Ptr server = loadCertificate(files.server_cert);
  EXPECT_TRUE(coversDns(server.get(), "second.iothub.test"));
  EXPECT_FALSE(coversDns(server.get(), "first.iothub.test"));
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  EXPECT_EQ(fileMode(files.server_key), 0600u);
}

TEST_F(TlsBootstrapTest, ExtraNamesOfAClusterNodeAreCoveredAndAddedLater) {
  TlsFiles files = ensure("hub.example");
  X509Ptr before = loadCertificate(files.server_cert);
  EXPECT_FALSE(coversIp(before.get(), "10.0.0.7"));
  // The node's own address joins the SANs: the certificate is re-issued, the CA kept.
  std::string ca_before = readFile(files.ca_cert);
  auto again = ensureDevelopmentCertificates(data_dir_, "hub.example", clock_,
                                             {"10.0.0.7", "node7.example"});
  ASSERT_TRUE(again.isOk()) << again.status().toString();
  X509Ptr after = loadCertificate(files.server_cert);
  EXPECT_TRUE(coversIp(after.get(), "10.0.0.7"));
  EXPECT_EQ(X509_check_host(after.get(), "node7.example", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT,
                            nullptr),
            1);
  EXPECT_EQ(
      X509_check_host(after.get(), "hub.example", 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr),
      1);
  EXPECT_EQ(readFile(files.ca_cert), ca_before);
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  // A name that is neither an address nor a DNS name is refused.
  auto bad = ensureDevelopmentCertificates(data_dir_, "hub.example", clock_, {"bad name"});
  EXPECT_EQ(bad.code(), ErrorCode::ArgumentInvalid);
}

TEST_F(TlsBootstrapTest, ASharedCaReplacesTheLocalOneAndTheServerCertificateFollows) {
  // Node A's CA becomes node B's: B's server certificate is re-issued by it.
  fs::path node_a = root_ / "a";
  auto shared = localOrNewDevelopmentCa(node_a, clock_);  // none there: a new, unwritten CA
  ASSERT_TRUE(shared.isOk()) << shared.status().toString();
  EXPECT_FALSE(fs::exists(node_a / "tls" / "ca.pem"));
  TlsFiles files = ensure("hub.example");
  std::string own_ca = readFile(files.ca_cert);
  ASSERT_NE(own_ca, shared->cert_pem);
  // A node proposes the CA it already has.
  auto proposed = localOrNewDevelopmentCa(data_dir_, clock_);
  ASSERT_TRUE(proposed.isOk());
  EXPECT_EQ(proposed->cert_pem, own_ca);

  ASSERT_TRUE(installDevelopmentCa(data_dir_, *shared, clock_).isOk());
  EXPECT_EQ(readFile(files.ca_cert), shared->cert_pem);
  ASSERT_TRUE(ensureDevelopmentCertificates(data_dir_, "hub.example", clock_).isOk());
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  // Installing the same CA again writes nothing.
  Snapshot before = snapshot(files);
  ASSERT_TRUE(installDevelopmentCa(data_dir_, *shared, clock_).isOk());
  EXPECT_EQ(snapshot(files).ca_key, before.ca_key);
  // A CA whose key does not match is refused and changes nothing.
  DevelopmentCa mismatched{shared->cert_pem, proposed->key_pem};
  EXPECT_EQ(installDevelopmentCa(data_dir_, mismatched, clock_).code(), ErrorCode::ServerError);
  EXPECT_EQ(readFile(files.ca_cert), shared->cert_pem);
}

TEST_F(TlsBootstrapTest, Ipv4HostNameGetsAnIpSan) {
  TlsFiles files = ensure("10.1.2.3");
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(server);
  EXPECT_TRUE(coversIp(server.get(), "10.1.2.3"));
  auto names = subjectAltNames(server.get());
  EXPECT_EQ(names.front(), "IP:10.1.2.3");
  EXPECT_EQ(std::count(names.begin(), names.end(), "DNS:10.1.2.3"), 0);
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  // Same host again: nothing changes.
  Snapshot before = snapshot(files);
  ensure("10.1.2.3");
  EXPECT_EQ(snapshot(files).server_cert, before.server_cert);
}

TEST_F(TlsBootstrapTest, Ipv6HostNameGetsAnIpSan) {
  TlsFiles files = ensure("fd00::1:2");
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(server);
  EXPECT_TRUE(coversIp(server.get(), "fd00::1:2"));
  EXPECT_TRUE(coversIp(server.get(), "::1"));
  EXPECT_EQ(subjectAltNames(server.get()).size(), 4u);
}

TEST_F(TlsBootstrapTest, ReissuesServerCertificateOnlyWhenItExpiresWithin30Days) {
  TlsFiles files = ensure();
  Snapshot first = snapshot(files);
  clock_.advance(days(825 - 31));
  ensure();
  EXPECT_EQ(snapshot(files).server_cert, first.server_cert);

  clock_.advance(days(2));
  ensure();
  Snapshot renewed = snapshot(files);
  EXPECT_NE(renewed.server_cert, first.server_cert);
  EXPECT_EQ(renewed.ca_cert, first.ca_cert);
  EXPECT_EQ(renewed.ca_key, first.ca_key);
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  X509Ptr server = loadCertificate(files.server_cert);
  EXPECT_EQ(timeFrom(clock_.now(), X509_get0_notAfter(server.get())), std::make_pair(825, 0));
}

TEST_F(TlsBootstrapTest, ServerCertificateNeverOutlivesTheCa) {
  TlsFiles files = ensure();
  clock_.advance(days(3650 - 100));
  ensure();
  X509Ptr ca = loadCertificate(files.ca_cert);
  X509Ptr server = loadCertificate(files.server_cert);
  EXPECT_EQ(ASN1_TIME_compare(X509_get0_notAfter(server.get()), X509_get0_notAfter(ca.get())), 0);
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
}

TEST_F(TlsBootstrapTest, ExpiredCaIsAnError) {
  ensure();
  clock_.advance(days(3651));
  auto result = ensureDevelopmentCertificates(data_dir_, "localhost", clock_);
  ASSERT_FALSE(result.isOk());
  EXPECT_EQ(result.code(), ErrorCode::ServerError);
  EXPECT_NE(result.status().message().find("expired"), std::string::npos)
      << result.status().message();
}

TEST_F(TlsBootstrapTest, ReissuesMissingServerFiles) {
  TlsFiles files = ensure();
  Snapshot first = snapshot(files);

  fs::remove(files.server_cert);
  ensure();
  EXPECT_TRUE(fs::exists(files.server_cert));
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);

  fs::remove(files.server_key);
  ensure();
  X509Ptr server = loadCertificate(files.server_cert);
  PkeyPtr key = loadKey(files.server_key);
  ASSERT_TRUE(server && key);
  EXPECT_EQ(X509_check_private_key(server.get(), key.get()), 1);
  EXPECT_EQ(snapshot(files).ca_cert, first.ca_cert);
}

TEST_F(TlsBootstrapTest, ReissuesWhenServerKeyDoesNotMatchCertificate) {
  // The state a crash between writing server.key and server.pem leaves behind.
  TlsFiles files = ensure();
  fs::path other_dir = root_ / "other";
  auto other = ensureDevelopmentCertificates(other_dir, "localhost", clock_);
  ASSERT_TRUE(other.isOk());
  fs::copy_file(other->server_key, files.server_key, fs::copy_options::overwrite_existing);
  ensure();
  X509Ptr server = loadCertificate(files.server_cert);
  PkeyPtr key = loadKey(files.server_key);
  ASSERT_TRUE(server && key);
  EXPECT_EQ(X509_check_private_key(server.get(), key.get()), 1);
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
}

TEST_F(TlsBootstrapTest, CreatesNewCaWhenCaPemIsMissingAndReissuesServerCertificate) {
  // Also the state a crash between writing ca.key and ca.pem leaves behind.
  TlsFiles files = ensure();
  Snapshot first = snapshot(files);
  fs::remove(files.ca_cert);
  ensure();
  Snapshot second = snapshot(files);
  EXPECT_NE(second.ca_cert, first.ca_cert);
  EXPECT_NE(second.ca_key, first.ca_key);
  EXPECT_NE(second.server_cert, first.server_cert);
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
}

TEST_F(TlsBootstrapTest, ReissuesServerCertificateIssuedByAnotherCa) {
  TlsFiles files = ensure();
  auto other = ensureDevelopmentCertificates(root_ / "other", "localhost", clock_);
  ASSERT_TRUE(other.isOk());
  fs::copy_file(other->server_cert, files.server_cert, fs::copy_options::overwrite_existing);
  fs::copy_file(other->server_key, files.server_key, fs::copy_options::overwrite_existing);
  ASSERT_NE(verifyServerCertificate(files, clock_.now()), X509_V_OK);
  ensure();
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
}

class TlsBootstrapErrorTest : public TlsBootstrapTest {
 protected:
  void expectError(std::string_view host, ErrorCode code, std::string_view mentions) {
    auto result = ensureDevelopmentCertificates(data_dir_, host, clock_);
    ASSERT_FALSE(result.isOk());
    EXPECT_EQ(result.code(), code);
    EXPECT_NE(result.status().message().find(mentions), std::string::npos)
        << result.status().message();
  }
};

TEST_F(TlsBootstrapErrorTest, CorruptCaKeyIsAnErrorAndChangesNothing) {
  TlsFiles files = ensure();
  writeFile(files.ca_key, "this is not a key\n");
  Snapshot before = snapshot(files);
  expectError("other.example", ErrorCode::ServerError, "ca.key");
  Snapshot after = snapshot(files);
  EXPECT_EQ(after.ca_cert, before.ca_cert);
  EXPECT_EQ(after.server_cert, before.server_cert);
  EXPECT_EQ(after.server_key, before.server_key);
  EXPECT_EQ(ERR_peek_error(), 0u) << "the OpenSSL error queue must be left empty";
}

TEST_F(TlsBootstrapErrorTest, EncryptedCaKeyIsAnErrorWithoutPrompting) {
  TlsFiles files = ensure();
  PkeyPtr key = loadKey(files.ca_key);
  BioPtr bio(BIO_new(BIO_s_mem()));
  static char passphrase[] = "secret";
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio.get(), key.get(), EVP_aes_256_cbc(), nullptr, 0, nullptr,
                                     passphrase),
            1);
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  writeFile(files.ca_key, std::string_view(data, static_cast<std::size_t>(size)));
  expectError("localhost", ErrorCode::ServerError, "ca.key");
}

TEST_F(TlsBootstrapErrorTest, CaKeyNotMatchingCaCertificateIsAnError) {
  TlsFiles files = ensure();
  auto other = ensureDevelopmentCertificates(root_ / "other", "localhost", clock_);
  ASSERT_TRUE(other.isOk());
  fs::copy_file(other->ca_key, files.ca_key, fs::copy_options::overwrite_existing);
  expectError("localhost", ErrorCode::ServerError, "does not match");
}

TEST_F(TlsBootstrapErrorTest, CaPemWithoutCaKeyIsAnError) {
  TlsFiles files = ensure();
  fs::remove(files.ca_key);
  expectError("localhost", ErrorCode::ServerError, "ca.key is missing");
}

TEST_F(TlsBootstrapErrorTest, CorruptCaPemIsAnError) {
  TlsFiles files = ensure();
  writeFile(files.ca_cert, "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n");
  expectError("localhost", ErrorCode::ServerError, "ca.pem");
}

TEST_F(TlsBootstrapErrorTest, CaPemHoldingNoCertificateIsAnError) {
  TlsFiles files = ensure();
  fs::copy_file(files.ca_key, files.ca_cert, fs::copy_options::overwrite_existing);
  expectError("localhost", ErrorCode::ServerError, "ca.pem");
}

TEST_F(TlsBootstrapErrorTest, CorruptServerFilesAreErrors) {
  TlsFiles files = ensure();
  std::string server_key = readFile(files.server_key);
  writeFile(files.server_key, server_key.substr(0, server_key.size() / 2));
  expectError("localhost", ErrorCode::ServerError, "server.key");
  writeFile(files.server_key, server_key);
  writeFile(files.server_cert, "");
  expectError("localhost", ErrorCode::ServerError, "server.pem");
}

TEST_F(TlsBootstrapErrorTest, UnreadableFileIsAnError) {
  TlsFiles files = ensure();
  fs::remove(files.ca_cert);
  fs::create_directory(files.ca_cert);  // read() on a directory fails with EISDIR
  expectError("localhost", ErrorCode::ServerError, "cannot read");
}

TEST_F(TlsBootstrapErrorTest, DataDirectoryThatCannotBeCreatedIsAnError) {
  writeFile(root_ / "a-file", "x");
  data_dir_ = root_ / "a-file" / "data";
  expectError("localhost", ErrorCode::ServerError, "cannot create directory");
}

TEST_F(TlsBootstrapErrorTest, TlsPathThatIsAFileIsAnError) {
  fs::create_directories(data_dir_);
  writeFile(data_dir_ / "tls", "x");
  expectError("localhost", ErrorCode::ServerError, "tls");
}

TEST_F(TlsBootstrapErrorTest, UnwritableDirectoryIsAnError) {
  if (::geteuid() == 0) {
    // Root writes to read-only directories, but nobody can create files under /proc.
    auto result =
        ensureDevelopmentCertificates("/proc/self/iothub-unwritable", "localhost", clock_);
    ASSERT_FALSE(result.isOk());
    EXPECT_EQ(result.code(), ErrorCode::ServerError);
    return;
  }
  fs::create_directories(data_dir_ / "tls");
  fs::permissions(data_dir_ / "tls", fs::perms::owner_read | fs::perms::owner_exec);
  expectError("localhost", ErrorCode::ServerError, "cannot create");
  fs::permissions(data_dir_ / "tls", fs::perms::owner_all);
}

TEST_F(TlsBootstrapErrorTest, FailedWriteIsAnErrorAndLeavesNoTemporaryFile) {
  // Works as root too: rename() cannot replace a non-empty directory.
  fs::create_directories(data_dir_ / "tls" / "ca.key" / "occupied");
  expectError("localhost", ErrorCode::ServerError, "ca.key");
  EXPECT_EQ(std::distance(fs::directory_iterator(data_dir_ / "tls"), fs::directory_iterator()), 1);
}

TEST_F(TlsBootstrapErrorTest, InvalidHostNamesAreRejected) {
  for (std::string host :
       {std::string(""), std::string("bad host"), std::string("a.example,DNS:evil.example"),
        std::string("-a.example"), std::string("a..example"), std::string("a.example."),
        std::string("fe80::1%eth0"), std::string("localhost\0evil", 14), std::string(254, 'a'),
        std::string(64, 'a') + ".example"}) {
    SCOPED_TRACE(host);
    expectError(host, ErrorCode::ArgumentInvalid, "host name");
  }
  EXPECT_FALSE(fs::exists(data_dir_));
}

TEST_F(TlsBootstrapTest, HostNameLongerThanCommonNameLimitIsCoveredBySan) {
  std::string host = std::string(60, 'a') + "." + std::string(60, 'b') + ".example";
  TlsFiles files = ensure(host);
  X509Ptr server = loadCertificate(files.server_cert);
  ASSERT_TRUE(server);
  EXPECT_TRUE(coversDns(server.get(), host));
  EXPECT_EQ(verifyServerCertificate(files, clock_.now()), X509_V_OK);
}

// --- end to end: an in-memory TLS handshake with the generated files -----------------------

struct HandshakeOutcome {
  bool completed = false;
  long verify_result = X509_V_OK;
  std::string received;
};

// Connects an OpenSSL client trusting only ca.pem to a server using server.pem/server.key
// through a BIO pair, checking `host` (SNI + host name check, or IP check), at `version`.
HandshakeOutcome handshake(const TlsFiles& files, const std::string& host, bool host_is_ip,
                           int version) {
  HandshakeOutcome outcome;
  SslContextPtr server_context(SSL_CTX_new(TLS_server_method()));
  SslContextPtr client_context(SSL_CTX_new(TLS_client_method()));
  EXPECT_TRUE(server_context && client_context);
  if (!server_context || !client_context) return outcome;
  for (SSL_CTX* context : {server_context.get(), client_context.get()}) {
    SSL_CTX_set_min_proto_version(context, version);
    SSL_CTX_set_max_proto_version(context, version);
  }
  EXPECT_EQ(SSL_CTX_use_certificate_chain_file(server_context.get(), files.server_cert.c_str()), 1);
  EXPECT_EQ(
      SSL_CTX_use_PrivateKey_file(server_context.get(), files.server_key.c_str(), SSL_FILETYPE_PEM),
      1);
  EXPECT_EQ(SSL_CTX_check_private_key(server_context.get()), 1);
  EXPECT_EQ(SSL_CTX_load_verify_locations(client_context.get(), files.ca_cert.c_str(), nullptr), 1);
  SSL_CTX_set_verify(client_context.get(), SSL_VERIFY_PEER, nullptr);

  SslPtr server(SSL_new(server_context.get()));
  SslPtr client(SSL_new(client_context.get()));
  SSL_set_accept_state(server.get());
  SSL_set_connect_state(client.get());
  if (host_is_ip) {
    EXPECT_EQ(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(client.get()), host.c_str()), 1);
  } else {
    EXPECT_EQ(SSL_set_tlsext_host_name(client.get(), host.c_str()), 1);
    EXPECT_EQ(SSL_set1_host(client.get(), host.c_str()), 1);
  }
  BIO* client_end = nullptr;
  BIO* server_end = nullptr;
  EXPECT_EQ(BIO_new_bio_pair(&client_end, 0, &server_end, 0), 1);
  SSL_set_bio(client.get(), client_end, client_end);
  SSL_set_bio(server.get(), server_end, server_end);

  auto pending = [](SSL* ssl, int rc) {
    int error = SSL_get_error(ssl, rc);
    return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE;
  };
  bool client_done = false;
  bool server_done = false;
  for (int round = 0; round < 50 && !(client_done && server_done); ++round) {
    if (!client_done) {
      int rc = SSL_do_handshake(client.get());
      client_done = rc == 1;
      if (!client_done && !pending(client.get(), rc)) break;
    }
    if (!server_done) {
      int rc = SSL_do_handshake(server.get());
      server_done = rc == 1;
      if (!server_done && !pending(server.get(), rc)) break;
    }
  }
  outcome.verify_result = SSL_get_verify_result(client.get());
  if (client_done && server_done) {
    const char message[] = "ping";
    EXPECT_EQ(SSL_write(client.get(), message, 4), 4);
    char buffer[16] = {};
    int n = SSL_read(server.get(), buffer, sizeof buffer);
    if (n > 0) outcome.received.assign(buffer, static_cast<std::size_t>(n));
    outcome.completed = true;
  }
  ERR_clear_error();
  return outcome;
}

class TlsHandshakeTest : public TlsBootstrapTest, public ::testing::WithParamInterface<int> {};

TEST_P(TlsHandshakeTest, ClientTrustingCaPemConnectsToLocalhost) {
  TlsFiles files = ensure();
  HandshakeOutcome outcome = handshake(files, "localhost", false, GetParam());
  EXPECT_TRUE(outcome.completed);
  EXPECT_EQ(outcome.verify_result, X509_V_OK)
      << X509_verify_cert_error_string(outcome.verify_result);
  EXPECT_EQ(outcome.received, "ping");
}

TEST_P(TlsHandshakeTest, ClientConnectsByCustomHostNameAndLoopbackIp) {
  TlsFiles files = ensure("hub.iothub.test");
  EXPECT_TRUE(handshake(files, "hub.iothub.test", false, GetParam()).completed);
  EXPECT_TRUE(handshake(files, "127.0.0.1", true, GetParam()).completed);
  EXPECT_TRUE(handshake(files, "::1", true, GetParam()).completed);
}

TEST_P(TlsHandshakeTest, ClientRejectsServerForAnotherHostName) {
  TlsFiles files = ensure();
  HandshakeOutcome outcome = handshake(files, "evil.example", false, GetParam());
  EXPECT_FALSE(outcome.completed);
  EXPECT_EQ(outcome.verify_result, X509_V_ERR_HOSTNAME_MISMATCH);
}

INSTANTIATE_TEST_SUITE_P(TlsVersions, TlsHandshakeTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION),
                         [](const ::testing::TestParamInfo<int>& param_info) {
                           return param_info.param == TLS1_3_VERSION ? std::string("Tls13")
                                                                     : std::string("Tls12");
                         });

}  // namespace
}  // namespace iothub::server
