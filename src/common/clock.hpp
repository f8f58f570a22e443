#pragma once

// The definitions are public (the SDKs' API uses them): include/iothub/clock.hpp.
#include "iothub/clock.hpp"
