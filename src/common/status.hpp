#pragma once

// The definitions are public (the SDKs' API uses them): include/iothub/status.hpp.
#include "iothub/status.hpp"
