#pragma once

// The definitions are public (the service SDK's API uses them): include/iothub/connection_string.hpp.
#include "iothub/connection_string.hpp"
