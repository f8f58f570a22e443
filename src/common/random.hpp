#pragma once

// The definitions are public (the SDKs' API uses them): include/iothub/random.hpp.
#include "iothub/random.hpp"
