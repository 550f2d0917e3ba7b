// Minimal assertion helpers for the C++ unit tests (no gtest available offline).
#pragma once
#include <cmath>
#include <cstdio>
#include <cstdlib>

#define NNIP_CHECK(cond)                                                      \
  do {                                                                        \
    if (!(cond)) {                                                            \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                           \
    }                                                                         \
  } while (0)

#define NNIP_CHECK_NEAR(a, b, tol) NNIP_CHECK(std::fabs(double(a) - double(b)) <= (tol))
