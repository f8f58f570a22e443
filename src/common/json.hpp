#pragma once

// The definitions are public (the SDKs' API uses them): include/iothub/json.hpp.
#include "iothub/json.hpp"
