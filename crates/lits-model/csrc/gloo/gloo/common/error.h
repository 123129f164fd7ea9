// See README.md: declarations for ProcessGroupGloo.hpp only.
#pragma once
