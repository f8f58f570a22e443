#include "server/tls_bootstrap.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "common/openssl_handles.hpp"
#include "common/random.hpp"

namespace iothub::server {
namespace {

namespace fs = std::filesystem;

constexpr auto kCaValidity = std::chrono::days{3650};
// The longest validity Apple platforms accept for a TLS server certificate.
constexpr auto kServerValidity = std::chrono::days{825};
constexpr auto kRenewBefore = std::chrono::days{30};
// notBefore is back-dated so a client whose clock lags ours still accepts a fresh certificate.
constexpr auto kClockSkewAllowance = std::chrono::hours{1};
// RFC 5280 ub-common-name; longer host names still appear in full in the SAN.
constexpr std::size_t kMaxCommonNameLength = 64;
// Far above any PEM file written here; bounds what a wrong path could make us read.
constexpr std::size_t kMaxPemFileSize = 1 << 20;
constexpr mode_t kKeyFileMode = 0600;
// Certificates are public, but the data directory is private as a whole (docs/limits.md):
// clients get ca.pem by copying it or running as the hub's user.
constexpr mode_t kCertFileMode = 0600;

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now and reports the result: close() is where some file systems report write errors.
  int close() { return ::close(std::exchange(fd_, -1)); }

 private:
  int fd_;
};

// Private key material in memory is wiped when it goes out of scope.
class SecretString {
 public:
  SecretString() = default;
  explicit SecretString(std::string text) : text_(std::move(text)) {}
  SecretString(const SecretString&) = delete;
  SecretString& operator=(const SecretString&) = delete;
  SecretString(SecretString&&) = default;
  ~SecretString() { OPENSSL_cleanse(text_.data(), text_.size()); }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

struct CertifiedKey {
  X509Ptr cert;
  PkeyPtr key;
};

struct HostName {
  std::string text;
  bool is_ip = false;
};

// Drains OpenSSL's per-thread error queue into one line. Draining matters beyond the
// message: a stale entry left on the queue confuses later SSL_get_error() calls on this thread.
std::string takeOpensslErrors() {
  std::string out;
  while (unsigned long error = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(error, buffer, sizeof buffer);
    if (!out.empty()) out += "; ";
    out += buffer;
  }
  return out;
}

Status opensslFailure(std::string what) {
  std::string detail = takeOpensslErrors();
  if (!detail.empty()) what += " (" + detail + ")";
  return Status(ErrorCode::ServerError, std::move(what));
}

Status fileError(std::string_view what, const fs::path& path, int error) {
  return Status(ErrorCode::ServerError, std::string(what) + " " + path.string() + ": " +
                                            std::generic_category().message(error));
}

std::string deleteHint(const fs::path& dir) {
  return "; delete " + dir.string() + " to create a new development CA (clients must then trust " +
         "the new ca.pem)";
}

// --- files ---------------------------------------------------------------------------------

// The file's content, or nullopt when it does not exist.
Result<std::optional<SecretString>> readFileIfExists(const fs::path& path) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return std::optional<SecretString>{};
    return fileError("cannot open", path, errno);
  }
  std::string content;
  content.reserve(8192);  // no reallocation (leaving unwiped copies) for any normal key file
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int error = errno;
      OPENSSL_cleanse(content.data(), content.size());
      return fileError("cannot read", path, error);
    }
    if (n == 0) break;
    content.append(buffer, static_cast<std::size_t>(n));
    if (content.size() > kMaxPemFileSize) {
      OPENSSL_cleanse(content.data(), content.size());
      return Status(ErrorCode::ServerError,
                    "cannot read " + path.string() + ": larger than any certificate or key file");
    }
  }
  OPENSSL_cleanse(buffer, sizeof buffer);
  return std::optional<SecretString>(SecretString(std::move(content)));
}

void syncDirectory(const fs::path& dir) {
  // Best effort: makes the rename durable; some file systems refuse fsync on directories,
  // and the files are already complete either way.
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() >= 0) ::fsync(fd.get());
}

// Replaces `path` with `content` so that readers see either the old or the new file, never
// a partial one. The temporary file is created with `mode` from the start, so key material
// is never readable by others even briefly.
Status writeFileAtomically(const fs::path& path, std::string_view content, mode_t mode) {
  fs::path temp = path;
  temp += ".tmp-" + std::to_string(::getpid());
  ::unlink(temp.c_str());  // a leftover of a crashed run with the same pid
  FileDescriptor fd(
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
  if (fd.get() < 0) return fileError("cannot create", temp, errno);
  auto fail = [&](std::string_view what) {
    int error = errno;
    ::unlink(temp.c_str());
    return fileError(what, temp, error);
  };
  // The umask only narrows the mode given to open(); set it exactly.
  if (::fchmod(fd.get(), mode) != 0) return fail("cannot set permissions of");
  std::size_t written = 0;
  while (written < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("cannot write");
    written += static_cast<std::size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return fail("cannot sync");
  if (fd.close() != 0) return fail("cannot close");
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    int error = errno;
    ::unlink(temp.c_str());
    return fileError("cannot replace", path, error);
  }
  syncDirectory(path.parent_path());
  return Status::ok();
}

// --- PEM -----------------------------------------------------------------------------------

// Never prompt on the terminal for a passphrase: an encrypted key file is an error here.
int refusePassphrase(char*, int, int, void*) { return -1; }

BioPtr readOnlyBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

Result<std::string> bioContents(BIO* bio) {
  char* data = nullptr;
  long size = BIO_get_mem_data(bio, &data);
  if (size < 0 || (size > 0 && data == nullptr)) return opensslFailure("cannot encode PEM");
  return std::string(data, static_cast<std::size_t>(size));
}

Result<std::string> certificatePem(X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return opensslFailure("cannot encode certificate");
  }
  return bioContents(bio.get());
}

Result<SecretString> privateKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio ||
      PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    return opensslFailure("cannot encode private key");
  }
  auto pem = bioContents(bio.get());
  if (!pem) return pem.status();
  SecretString secret(std::move(pem.value()));
  // A memory BIO frees without wiping; clear what it holds before BIO_free_all.
  char* data = nullptr;
  long size = BIO_get_mem_data(bio.get(), &data);
  if (data != nullptr && size > 0) OPENSSL_cleanse(data, static_cast<std::size_t>(size));
  return secret;
}

// All certificates in a PEM file, in order; an error when there is none or one is malformed.
Result<std::vector<X509Ptr>> parseCertificates(const std::string& pem, const fs::path& path) {
  BioPtr bio = readOnlyBio(pem);
  if (!bio) return opensslFailure("cannot read " + path.string());
  std::vector<X509Ptr> certs;
  for (;;) {
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, refusePassphrase, nullptr));
    if (!cert) {
      unsigned long error = ERR_peek_last_error();
      bool end_of_input =
          ERR_GET_LIB(error) == ERR_LIB_PEM && ERR_GET_REASON(error) == PEM_R_NO_START_LINE;
      if (end_of_input && !certs.empty()) {
        ERR_clear_error();
        return certs;
      }
      return opensslFailure(path.string() + " is not a valid PEM certificate file");
    }
    certs.push_back(std::move(cert));
  }
}

Result<PkeyPtr> parsePrivateKey(const std::string& pem, const fs::path& path) {
  BioPtr bio = readOnlyBio(pem);
  if (!bio) return opensslFailure("cannot read " + path.string());
  PkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, refusePassphrase, nullptr));
  if (!key) {
    return opensslFailure(path.string() + " is not a valid unencrypted PEM private key");
  }
  return key;
}

// --- host names ----------------------------------------------------------------------------

// Letters, digits and '-' (RFC 1123), plus '_', which appears in container and compose
// service names that clients resolve and check.
bool isDnsLabelCharacter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

bool isValidDnsName(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  std::size_t start = 0;
  while (start <= name.size()) {
    std::size_t end = name.find('.', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view label = name.substr(start, end - start);
    if (label.empty() || label.size() > 63) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!isDnsLabelCharacter(c)) return false;
    }
    start = end + 1;
  }
  return true;
}

// Canonical text of an IPv4/IPv6 address literal, or nullopt when `text` is not one.
std::optional<std::string> canonicalIpAddress(const std::string& text) {
  unsigned char address[16];
  char canonical[INET6_ADDRSTRLEN];
  for (int family : {AF_INET, AF_INET6}) {
    if (::inet_pton(family, text.c_str(), address) == 1 &&
        ::inet_ntop(family, address, canonical, sizeof canonical) != nullptr) {
      return std::string(canonical);
    }
  }
  return std::nullopt;
}

Result<HostName> classifyHostName(std::string_view host_name) {
  std::string text(host_name);
  // inet_pton reads a C string: an embedded NUL would hide the rest of the name.
  if (text.find('\0') == std::string::npos) {
    if (canonicalIpAddress(text)) return HostName{text, true};
    if (isValidDnsName(text)) return HostName{text, false};
  }
  return Status(ErrorCode::ArgumentInvalid, "host name '" + text.substr(0, 300) +
                                                "' is neither an IP address nor a valid DNS name");
}

bool certificateCovers(X509* cert, const HostName& host) {
  int covered = host.is_ip ? X509_check_ip_asc(cert, host.text.c_str(), 0)
                           : X509_check_host(cert, host.text.data(), host.text.size(),
                                             X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, nullptr);
  ERR_clear_error();
  return covered == 1;
}

// --- certificate building ------------------------------------------------------------------

std::time_t toTimeT(SystemTime t) { return std::chrono::system_clock::to_time_t(t); }

Result<PkeyPtr> generateP256Key() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return opensslFailure("cannot generate an ECDSA P-256 key");
  return key;
}

// A new v3 certificate with a random positive 128-bit serial, subject CN, validity and
// public key set; issuer, extensions and signature are up to the caller.
Result<X509Ptr> newCertificate(std::string_view common_name, SystemTime not_before,
                               SystemTime not_after, EVP_PKEY* public_key) {
  X509Ptr cert(X509_new());
  if (!cert || X509_set_version(cert.get(), X509_VERSION_3) != 1) {
    return opensslFailure("cannot create certificate");
  }

  unsigned char serial_bytes[16];
  SecureRandom().fill(serial_bytes, sizeof serial_bytes);
  BignumPtr serial(BN_bin2bn(serial_bytes, static_cast<int>(sizeof serial_bytes), nullptr));
  // RFC 5280 §4.1.2.2 wants a positive serial; BN_bin2bn is never negative, only maybe zero.
  if (serial && BN_is_zero(serial.get())) BN_one(serial.get());
  Asn1IntegerPtr serial_asn1(serial ? BN_to_ASN1_INTEGER(serial.get(), nullptr) : nullptr);
  if (!serial_asn1 || X509_set_serialNumber(cert.get(), serial_asn1.get()) != 1) {
    return opensslFailure("cannot set certificate serial number");
  }

  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return opensslFailure("cannot set certificate subject");
  }

  if (ASN1_TIME_set(X509_getm_notBefore(cert.get()), toTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), toTimeT(not_after)) == nullptr) {
    return opensslFailure("cannot set certificate validity");
  }
  if (X509_set_pubkey(cert.get(), public_key) != 1) {
    return opensslFailure("cannot set certificate public key");
  }
  return cert;
}

// Adds an extension written in openssl.cnf syntax (x509v3_config(5)). `context` names the
// subject and issuer, which "hash" and "keyid" values are computed from.
Status addExtension(X509* cert, X509V3_CTX* context, int nid, const char* value) {
  ExtensionPtr extension(X509V3_EXT_nconf_nid(nullptr, context, nid, value));
  if (!extension || X509_add_ext(cert, extension.get(), -1) != 1) {
    return opensslFailure(std::string("cannot add certificate extension ") + OBJ_nid2sn(nid));
  }
  return Status::ok();
}

// The SAN entries: the host name, then the loopback names every local client may use,
// without duplicates (e.g. when the host name is "localhost" or "::1").
Status addSubjectAltNames(X509* cert, const HostName& host, const std::vector<HostName>& extra) {
  struct Entry {
    int type;
    std::string value;
  };
  std::vector<Entry> entries = {{host.is_ip ? GEN_IPADD : GEN_DNS, host.text}};
  for (const HostName& name : extra)
    entries.push_back({name.is_ip ? GEN_IPADD : GEN_DNS, name.text});
  entries.push_back({GEN_DNS, "localhost"});
  entries.push_back({GEN_IPADD, "127.0.0.1"});
  entries.push_back({GEN_IPADD, "::1"});
  auto canonical = [](const Entry& e) {
    if (e.type == GEN_IPADD) return canonicalIpAddress(e.value).value_or(e.value);
    std::string lower = e.value;
    for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    return lower;
  };

  GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
  if (!names) return opensslFailure("cannot build subjectAltName");
  std::vector<std::pair<int, std::string>> seen;
  for (const Entry& entry : entries) {
    std::pair<int, std::string> key{entry.type, canonical(entry)};
    if (std::find(seen.begin(), seen.end(), key) != seen.end()) continue;
    seen.push_back(std::move(key));
    GeneralNamePtr name(
        a2i_GENERAL_NAME(nullptr, nullptr, nullptr, entry.type, entry.value.c_str(), 0));
    if (!name || sk_GENERAL_NAME_push(names.get(), name.get()) == 0) {
      return opensslFailure("cannot add subjectAltName " + entry.value);
    }
    name.release();  // owned by `names` now
  }
  if (X509_add1_ext_i2d(cert, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) != 1) {
    return opensslFailure("cannot add subjectAltName");
  }
  return Status::ok();
}

Status sign(X509* cert, EVP_PKEY* issuer_key) {
  if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0) {
    return opensslFailure("cannot sign certificate");
  }
  return Status::ok();
}

Result<CertifiedKey> createCa(SystemTime now) {
  auto key = generateP256Key();
  if (!key) return key.status();
  std::string common_name = "iothub development CA " + SecureRandom().hex(4);
  auto cert = newCertificate(common_name, now - kClockSkewAllowance, now + kCaValidity, key->get());
  if (!cert) return cert.status();
  X509* ca = cert->get();
  if (X509_set_issuer_name(ca, X509_get_subject_name(ca)) != 1) {
    return opensslFailure("cannot set CA issuer");
  }
  X509V3_CTX context;
  X509V3_set_ctx(&context, ca, ca, nullptr, nullptr, 0);
  IOTHUB_RETURN_IF_ERROR(addExtension(ca, &context, NID_basic_constraints, "critical,CA:TRUE"));
  IOTHUB_RETURN_IF_ERROR(addExtension(ca, &context, NID_key_usage, "critical,keyCertSign,cRLSign"));
  IOTHUB_RETURN_IF_ERROR(addExtension(ca, &context, NID_subject_key_identifier, "hash"));
  IOTHUB_RETURN_IF_ERROR(sign(ca, key->get()));
  return CertifiedKey{std::move(cert.value()), std::move(key.value())};
}

Result<CertifiedKey> issueServerCertificate(const CertifiedKey& ca, const HostName& host,
                                            const std::vector<HostName>& extra, SystemTime now) {
  auto key = generateP256Key();
  if (!key) return key.status();
  std::string_view common_name =
      host.text.size() <= kMaxCommonNameLength ? std::string_view(host.text) : "iothub server";
  auto cert =
      newCertificate(common_name, now - kClockSkewAllowance, now + kServerValidity, key->get());
  if (!cert) return cert.status();
  X509* server = cert->get();
  // Never outlive the issuer: chain validation would fail from the CA's expiry on anyway.
  if (ASN1_TIME_compare(X509_get0_notAfter(server), X509_get0_notAfter(ca.cert.get())) > 0 &&
      X509_set1_notAfter(server, X509_get0_notAfter(ca.cert.get())) != 1) {
    return opensslFailure("cannot set certificate validity");
  }
  if (X509_set_issuer_name(server, X509_get_subject_name(ca.cert.get())) != 1) {
    return opensslFailure("cannot set certificate issuer");
  }
  X509V3_CTX context;
  X509V3_set_ctx(&context, ca.cert.get(), server, nullptr, nullptr, 0);
  IOTHUB_RETURN_IF_ERROR(addExtension(server, &context, NID_basic_constraints, "CA:FALSE"));
  IOTHUB_RETURN_IF_ERROR(
      addExtension(server, &context, NID_key_usage, "critical,digitalSignature"));
  IOTHUB_RETURN_IF_ERROR(addExtension(server, &context, NID_ext_key_usage, "serverAuth"));
  IOTHUB_RETURN_IF_ERROR(addExtension(server, &context, NID_subject_key_identifier, "hash"));
  // "issuer" is the fallback for a user-supplied CA without a subjectKeyIdentifier.
  IOTHUB_RETURN_IF_ERROR(
      addExtension(server, &context, NID_authority_key_identifier, "keyid,issuer"));
  IOTHUB_RETURN_IF_ERROR(addSubjectAltNames(server, host, extra));
  IOTHUB_RETURN_IF_ERROR(sign(server, ca.key.get()));
  return CertifiedKey{std::move(cert.value()), std::move(key.value())};
}

// --- the CA and server files ---------------------------------------------------------------

// Writes the key first and the certificate last: the certificate file is the commit point
// (see loadOrCreateCa and reasonToReissue for how a crash in between is recovered).
Status writeCertifiedKey(const CertifiedKey& pair, std::string_view cert_pem,
                         const fs::path& cert_path, const fs::path& key_path) {
  auto key_pem = privateKeyPem(pair.key.get());
  if (!key_pem) return key_pem.status();
  IOTHUB_RETURN_IF_ERROR(writeFileAtomically(key_path, key_pem->text(), kKeyFileMode));
  return writeFileAtomically(cert_path, cert_pem, kCertFileMode);
}

Result<CertifiedKey> loadOrCreateCa(const TlsFiles& files, SystemTime now) {
  const fs::path dir = files.ca_cert.parent_path();
  auto cert_file = readFileIfExists(files.ca_cert);
  if (!cert_file) return cert_file.status();
  if (!cert_file->has_value()) {
    // Without ca.pem no client can trust this CA yet, so an orphaned ca.key (a crash between
    // the two writes) is simply replaced.
    auto ca = createCa(now);
    if (!ca) return ca.status();
    auto pem = certificatePem(ca->cert.get());
    if (!pem) return pem.status();
    IOTHUB_RETURN_IF_ERROR(writeCertifiedKey(*ca, *pem, files.ca_cert, files.ca_key));
    spdlog::info("created development CA {}; clients must trust it", files.ca_cert.string());
    return ca;
  }

  auto key_file = readFileIfExists(files.ca_key);
  if (!key_file) return key_file.status();
  if (!key_file->has_value()) {
    return Status(ErrorCode::ServerError, files.ca_cert.string() + " exists but " +
                                              files.ca_key.string() + " is missing" +
                                              deleteHint(dir));
  }
  auto certs = parseCertificates((*cert_file)->text(), files.ca_cert);
  if (!certs) return certs.status();
  auto key = parsePrivateKey((*key_file)->text(), files.ca_key);
  if (!key) return key.status();
  CertifiedKey ca{std::move(certs->front()), std::move(key.value())};

  if (X509_check_private_key(ca.cert.get(), ca.key.get()) != 1) {
    ERR_clear_error();
    return Status(ErrorCode::ServerError, files.ca_key.string() + " does not match " +
                                              files.ca_cert.string() + deleteHint(dir));
  }
  if (X509_check_ca(ca.cert.get()) == 0) {
    return Status(ErrorCode::ServerError,
                  files.ca_cert.string() + " is not a CA certificate" + deleteHint(dir));
  }
  std::time_t now_t = toTimeT(now);
  if (X509_cmp_time(X509_get0_notAfter(ca.cert.get()), &now_t) <= 0) {
    ERR_clear_error();
    return Status(ErrorCode::ServerError,
                  files.ca_cert.string() + " has expired" + deleteHint(dir));
  }
  return ca;
}

// Why the server certificate must be re-issued, or nullopt when it can be kept.
std::optional<std::string> reasonToReissue(const std::vector<X509Ptr>& chain, EVP_PKEY* key,
                                           const CertifiedKey& ca, const HostName& host,
                                           const std::vector<HostName>& extra, SystemTime now) {
  X509* leaf = chain.front().get();
  std::optional<std::string> reason;
  std::time_t now_t = toTimeT(now);
  std::time_t renew_t = toTimeT(now + kRenewBefore);
  if (X509_check_private_key(leaf, key) != 1) {
    // Also the state after a crash between writing server.key and server.pem.
    reason = "server.key did not match the old one";
  } else if (X509_check_issued(ca.cert.get(), leaf) != X509_V_OK ||
             X509_verify(leaf, X509_get0_pubkey(ca.cert.get())) != 1) {
    reason = "the old one was not issued by the current CA";
  } else if (chain.size() < 2 || X509_cmp(chain[1].get(), ca.cert.get()) != 0) {
    reason = "the old one was not followed by the CA certificate";
  } else if (X509_check_purpose(leaf, X509_PURPOSE_SSL_SERVER, 0) != 1) {
    reason = "the old one was not a TLS server certificate";
  } else if (X509_cmp_time(X509_get0_notBefore(leaf), &now_t) >= 0) {
    reason = "the old one was not valid yet";
  } else if (X509_cmp_time(X509_get0_notAfter(leaf), &renew_t) <= 0) {
    reason = "the old one expires within 30 days";
  } else if (!certificateCovers(leaf, host)) {
    reason = "the old one did not cover host name " + host.text;
  } else {
    for (const HostName& name : extra) {
      if (!certificateCovers(leaf, name)) {
        reason = "the old one did not cover " + name.text;
        break;
      }
    }
  }
  ERR_clear_error();
  return reason;
}

Status ensureServerCertificate(const TlsFiles& files, const CertifiedKey& ca, const HostName& host,
                               const std::vector<HostName>& extra, SystemTime now) {
  auto cert_file = readFileIfExists(files.server_cert);
  if (!cert_file) return cert_file.status();
  auto key_file = readFileIfExists(files.server_key);
  if (!key_file) return key_file.status();

  std::string reason;
  if (!cert_file->has_value()) {
    reason = "there was none";
  } else if (!key_file->has_value()) {
    reason = "server.key was missing";
  } else {
    auto chain = parseCertificates((*cert_file)->text(), files.server_cert);
    if (!chain) return chain.status();
    auto key = parsePrivateKey((*key_file)->text(), files.server_key);
    if (!key) return key.status();
    auto stale = reasonToReissue(*chain, key->get(), ca, host, extra, now);
    if (!stale) return Status::ok();
    reason = *stale;
  }

  auto server = issueServerCertificate(ca, host, extra, now);
  if (!server) return server.status();
  auto server_pem = certificatePem(server->cert.get());
  if (!server_pem) return server_pem.status();
  auto ca_pem = certificatePem(ca.cert.get());
  if (!ca_pem) return ca_pem.status();
  IOTHUB_RETURN_IF_ERROR(
      writeCertifiedKey(*server, *server_pem + *ca_pem, files.server_cert, files.server_key));
  spdlog::info("issued server certificate {} for {}: {}", files.server_cert.string(), host.text,
               reason);
  return Status::ok();
}

}  // namespace

Result<TlsFiles> ensureDevelopmentCertificates(const fs::path& data_dir, std::string_view host_name,
                                               const Clock& clock,
                                               const std::vector<std::string>& extra_names) {
  auto host = classifyHostName(host_name);
  if (!host) return host.status();
  std::vector<HostName> extra;
  for (const std::string& name : extra_names) {
    auto classified = classifyHostName(name);
    if (!classified) return classified.status();
    extra.push_back(std::move(*classified));
  }

  const fs::path dir = data_dir / "tls";
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) {
    return Status(ErrorCode::ServerError,
                  "cannot create directory " + dir.string() + ": " + error.message());
  }
  TlsFiles files{dir / "ca.pem", dir / "ca.key", dir / "server.pem", dir / "server.key"};

  const SystemTime now = clock.now();
  auto ca = loadOrCreateCa(files, now);
  if (!ca) return ca.status();
  IOTHUB_RETURN_IF_ERROR(ensureServerCertificate(files, *ca, *host, extra, now));
  return files;
}

Result<DevelopmentCa> localOrNewDevelopmentCa(const fs::path& data_dir, const Clock& clock) {
  const fs::path dir = data_dir / "tls";
  TlsFiles files{dir / "ca.pem", dir / "ca.key", dir / "server.pem", dir / "server.key"};
  auto cert_file = readFileIfExists(files.ca_cert);
  if (!cert_file) return cert_file.status();
  if (cert_file->has_value()) {
    auto ca = loadOrCreateCa(files, clock.now());  // validates the pair; creates nothing here
    if (!ca) return ca.status();
    auto cert = certificatePem(ca->cert.get());
    if (!cert) return cert.status();
    auto key = privateKeyPem(ca->key.get());
    if (!key) return key.status();
    return DevelopmentCa{*cert, key->text()};
  }
  auto ca = createCa(clock.now());
  if (!ca) return ca.status();
  auto cert = certificatePem(ca->cert.get());
  if (!cert) return cert.status();
  auto key = privateKeyPem(ca->key.get());
  if (!key) return key.status();
  return DevelopmentCa{*cert, key->text()};
}

Status installDevelopmentCa(const fs::path& data_dir, const DevelopmentCa& ca, const Clock& clock) {
  const fs::path dir = data_dir / "tls";
  std::error_code error;
  fs::create_directories(dir, error);
  if (error) {
    return Status(ErrorCode::ServerError,
                  "cannot create directory " + dir.string() + ": " + error.message());
  }
  TlsFiles files{dir / "ca.pem", dir / "ca.key", dir / "server.pem", dir / "server.key"};
  // Check the pair before it replaces anything.
  auto certs = parseCertificates(ca.cert_pem, "the shared CA certificate");
  if (!certs) return certs.status();
  auto key = parsePrivateKey(ca.key_pem, "the shared CA key");
  if (!key) return key.status();
  if (X509_check_private_key(certs->front().get(), key->get()) != 1 ||
      X509_check_ca(certs->front().get()) == 0) {
    ERR_clear_error();
    return Status(ErrorCode::ServerError, "the shared CA is not a CA certificate with its key");
  }
  std::time_t now_t = toTimeT(clock.now());
  if (X509_cmp_time(X509_get0_notAfter(certs->front().get()), &now_t) <= 0) {
    ERR_clear_error();
    return Status(ErrorCode::ServerError, "the shared CA has expired");
  }
  auto current = readFileIfExists(files.ca_cert);
  if (!current) return current.status();
  if (current->has_value() && (*current)->text() == ca.cert_pem) return Status::ok();
  if (current->has_value()) {
    spdlog::warn("replacing the development CA in {} with the cluster's shared one",
                 files.ca_cert.string());
  }
  CertifiedKey pair{std::move(certs->front()), std::move(key.value())};
  return writeCertifiedKey(pair, ca.cert_pem, files.ca_cert, files.ca_key);
}

}  // namespace iothub::server
