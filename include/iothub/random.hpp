#pragma once

#include <cstdint>
#include <string>

namespace iothub {

// The one seam for randomness: keys, tracking ids, generation ids. Thread-safe.
class Random {
 public:
  virtual ~Random() = default;
  // Fills `out` with `size` random bytes.
  virtual void fill(void* out, std::size_t size) = 0;

  std::string bytes(std::size_t size);
  std::uint64_t u64();
  // `size` random bytes as lowercase hex (2*size characters).
  std::string hex(std::size_t size);
  // A fresh 256-bit symmetric key, base64 (44 characters), as Azure generates them.
  std::string symmetricKey();
};

// Cryptographically secure randomness from OpenSSL's RAND_bytes.
class SecureRandom final : public Random {
 public:
  void fill(void* out, std::size_t size) override;
};

// Deterministic randomness for tests (splitmix64).
class SeededRandom final : public Random {
 public:
  explicit SeededRandom(std::uint64_t seed) : state_(seed) {}
  void fill(void* out, std::size_t size) override;

 private:
  std::uint64_t state_;
};

}  // namespace iothub
