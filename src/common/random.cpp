#include "common/random.hpp"

#include <openssl/rand.h>

#include <cstring>

#include "common/encoding.hpp"
#include "common/status.hpp"

namespace iothub {

std::string Random::bytes(std::size_t size) {
  std::string out(size, '\0');
  fill(out.data(), size);
  return out;
}

std::uint64_t Random::u64() {
  std::uint64_t v = 0;
  fill(&v, sizeof v);
  return v;
}

std::string Random::hex(std::size_t size) { return hexEncode(bytes(size)); }

std::string Random::symmetricKey() { return base64Encode(bytes(32)); }

void SecureRandom::fill(void* out, std::size_t size) {
  IOTHUB_CHECK(RAND_bytes(static_cast<unsigned char*>(out), static_cast<int>(size)) == 1,
               "OpenSSL RAND_bytes failed: no entropy source");
}

void SeededRandom::fill(void* out, std::size_t size) {
  auto* p = static_cast<unsigned char*>(out);
  while (size > 0) {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    std::size_t n = size < sizeof z ? size : sizeof z;
    std::memcpy(p, &z, n);
    p += n;
    size -= n;
  }
}

}  // namespace iothub
