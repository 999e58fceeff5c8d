// Per-sample bilinear math of multi-scale deformable attention, shared by the CPU and CUDA kernels.
//
// A "sample" is one sampling point (batch, query, head, level, point). Its location (x, y) in [0, 1]
// is taken over the padded feature map of its level, with align_corners=False semantics: pixel
// centres sit at (i + 0.5) / size. Corners outside the map read as zero (zero padding), exactly as
// torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False).
//
// Everything here is plain arithmetic on scalars so the same code compiles as __host__ __device__
// under nvcc and as ordinary inline C++ under g++; the CPU tests therefore cover the CUDA math.
// Both kernels instantiate it with the accumulation type (at::opmath_type: float32 for float16 and
// bfloat16 inputs), converting each loaded location and weight first, so no arithmetic here ever
// runs in a 16-bit type.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MSDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MSDA_HOST_DEVICE inline
#endif

namespace msda {

// Four bilinear corners of one sample, ordered (top-left, top-right, bottom-left, bottom-right).
template <typename scalar_t>
struct BilinearCorners {
  int64_t index[4];     // row * width + col inside the level (only meaningful when valid)
  bool valid[4];        // corner lies inside the map; invalid corners contribute zero
  scalar_t weight[4];   // bilinear interpolation weight of each corner
  scalar_t frac_x;      // fractional position inside the cell, needed by the location gradient
  scalar_t frac_y;
};

// Fills `corners` for location (loc_x, loc_y) on a height x width map. Returns false when the
// sample is so far outside that all four corners are padding (the sample is then exactly zero).
template <typename scalar_t>
MSDA_HOST_DEVICE bool bilinear_corners(scalar_t loc_x, scalar_t loc_y, int64_t height, int64_t width,
                                       BilinearCorners<scalar_t>& corners) {
  // Continuous pixel coordinates under align_corners=False.
  const scalar_t x = loc_x * static_cast<scalar_t>(width) - scalar_t(0.5);
  const scalar_t y = loc_y * static_cast<scalar_t>(height) - scalar_t(0.5);
  // The comparisons are written so that NaN locations also count as outside.
  if (!(x > scalar_t(-1) && y > scalar_t(-1) && x < static_cast<scalar_t>(width) &&
        y < static_cast<scalar_t>(height))) {
    return false;
  }
  // x > -1, so truncation toward zero of (x + 1) gives floor(x) + 1 without calling floor().
  const int64_t x0 = static_cast<int64_t>(x + scalar_t(1)) - 1;
  const int64_t y0 = static_cast<int64_t>(y + scalar_t(1)) - 1;
  const int64_t x1 = x0 + 1;
  const int64_t y1 = y0 + 1;
  const scalar_t fx = x - static_cast<scalar_t>(x0);
  const scalar_t fy = y - static_cast<scalar_t>(y0);
  const scalar_t gx = scalar_t(1) - fx;
  const scalar_t gy = scalar_t(1) - fy;

  const bool x0_in = x0 >= 0;
  const bool x1_in = x1 < width;
  const bool y0_in = y0 >= 0;
  const bool y1_in = y1 < height;

  corners.index[0] = y0 * width + x0;
  corners.index[1] = y0 * width + x1;
  corners.index[2] = y1 * width + x0;
  corners.index[3] = y1 * width + x1;
  corners.valid[0] = y0_in && x0_in;
  corners.valid[1] = y0_in && x1_in;
  corners.valid[2] = y1_in && x0_in;
  corners.valid[3] = y1_in && x1_in;
  corners.weight[0] = gy * gx;
  corners.weight[1] = gy * fx;
  corners.weight[2] = fy * gx;
  corners.weight[3] = fy * fx;
  corners.frac_x = fx;
  corners.frac_y = fy;
  return true;
}

// Gradients of one sample's contribution  attn * sum_c weight_c * <value_c, grad_out>  given the
// four dot products dot[c] = <value_c, grad_out> (zero for invalid corners). The expression is
// linear in `dot`, so a CUDA thread that owns a single channel may pass per-channel partial dots
// and sum the results over channels; the CPU kernel passes the full dots over all channels.
template <typename scalar_t>
MSDA_HOST_DEVICE void sample_gradients(const BilinearCorners<scalar_t>& corners, const scalar_t dot[4],
                                       scalar_t attn, int64_t height, int64_t width,
                                       scalar_t& grad_attn, scalar_t& grad_loc_x, scalar_t& grad_loc_y) {
  const scalar_t fx = corners.frac_x;
  const scalar_t fy = corners.frac_y;
  const scalar_t gx = scalar_t(1) - fx;
  const scalar_t gy = scalar_t(1) - fy;
  grad_attn = corners.weight[0] * dot[0] + corners.weight[1] * dot[1] + corners.weight[2] * dot[2] +
              corners.weight[3] * dot[3];
  // d weight_c / d x and d weight_c / d y, in pixel units.
  const scalar_t d_dx = gy * (dot[1] - dot[0]) + fy * (dot[3] - dot[2]);
  const scalar_t d_dy = gx * (dot[2] - dot[0]) + fx * (dot[3] - dot[1]);
  // x = loc_x * width - 0.5, so d/d loc_x = width * d/dx.
  grad_loc_x = attn * static_cast<scalar_t>(width) * d_dx;
  grad_loc_y = attn * static_cast<scalar_t>(height) * d_dy;
}

}  // namespace msda
