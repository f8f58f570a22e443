#pragma once

// Owning handles for OpenSSL (libcrypto) objects, so every OpenSSL allocation is released by
// a unique_ptr and never by hand on each error path. Header-only; whoever uses a handle
// links the library that defines its free function (OpenSSL::Crypto for all of these).

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

namespace iothub {

// Deleter calling OpenSSL's `FreeFunction` (X509_free, EVP_PKEY_free, …). For a type not
// aliased below: std::unique_ptr<SSL, OpensslDeleter<SSL_free>>.
template <auto FreeFunction>
struct OpensslDeleter {
  template <class T>
  void operator()(T* p) const {
    FreeFunction(p);
  }
};

using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, OpensslDeleter<ASN1_INTEGER_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, OpensslDeleter<ASN1_TIME_free>>;
// BIO_free_all, so a chain of BIOs is released with its head.
using BioPtr = std::unique_ptr<BIO, OpensslDeleter<BIO_free_all>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BN_free>>;
using ExtensionPtr = std::unique_ptr<X509_EXTENSION, OpensslDeleter<X509_EXTENSION_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, OpensslDeleter<GENERAL_NAME_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OpensslDeleter<GENERAL_NAMES_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY_free>>;
using StoreContextPtr = std::unique_ptr<X509_STORE_CTX, OpensslDeleter<X509_STORE_CTX_free>>;
using StorePtr = std::unique_ptr<X509_STORE, OpensslDeleter<X509_STORE_free>>;
using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509_free>>;

}  // namespace iothub
