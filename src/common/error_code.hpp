#pragma once

// The definitions are public (the SDKs' API uses them): include/iothub/error_code.hpp.
#include "iothub/error_code.hpp"
