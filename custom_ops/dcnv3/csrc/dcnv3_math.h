// Per-sample math of DCNv3 shared by the CPU and the CUDA kernels.
//
// Conventions (InternImage DCNv3): input NHWC [N, H, W, G*Cg]; for output pixel (ho, wo), group g
// and kernel point p = i * Kh + j (i runs over the kernel width, j over its height) the sampling
// location in input pixel coordinates (pixel centres at integers) is
//     x = (dil_w*(Kw-1))/2 - pad_w + wo*stride_w + (i*dil_w - (dil_w*(Kw-1))/2 + off_x) * scale
//     y = (dil_h*(Kh-1))/2 - pad_h + ho*stride_h + (j*dil_h - (dil_h*(Kh-1))/2 + off_y) * scale
// where (off_x, off_y) = offset[n, ho, wo, (g*P + p)*2 + {0, 1}] and scale = offset_scale.
// The input is sampled bilinearly with zeros outside the map and weighted by mask[n,ho,wo,g*P+p].
//
// Both kernels instantiate these templates with the accumulation type (at::opmath_type: float32 for
// float16 / bfloat16 inputs), converting offsets and masks on load, so locations are computed in
// float32 even when the offsets are stored in 16 bits.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define DCNV3_HOST_DEVICE __host__ __device__
#else
#define DCNV3_HOST_DEVICE
#endif

namespace dcnv3 {

// Shape and geometry of one call, passed by value to every kernel.
struct Geometry {
  int64_t batch, height_in, width_in, height_out, width_out;
  int64_t group, group_channels, kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;

  DCNV3_HOST_DEVICE int64_t channels() const { return group * group_channels; }
  DCNV3_HOST_DEVICE int64_t points() const { return kernel_h * kernel_w; }
};

// The four neighbours of one sampling location: pixel index h*W+w in the input map (-1 when the
// neighbour lies outside, so it contributes zero) and its bilinear weight. The fractional parts
// are kept because the location gradient needs them.
template <typename scalar_t>
struct Bilinear {
  int64_t index[4];  // (low h, low w), (low h, high w), (high h, low w), (high h, high w)
  scalar_t weight[4];
  scalar_t frac_h, frac_w;  // position inside the cell, in [0, 1)
};

// Sampling location (y, x) in input pixel coordinates of kernel point (i along w, j along h).
template <typename scalar_t>
DCNV3_HOST_DEVICE inline void sampling_location(const Geometry& geo, int64_t ho, int64_t wo, int64_t i,
                                                int64_t j, scalar_t off_x, scalar_t off_y,
                                                scalar_t offset_scale, scalar_t* y, scalar_t* x) {
  const int64_t half_w = (geo.dilation_w * (geo.kernel_w - 1)) / 2;
  const int64_t half_h = (geo.dilation_h * (geo.kernel_h - 1)) / 2;
  const scalar_t centre_x = static_cast<scalar_t>(half_w - geo.pad_w + wo * geo.stride_w);
  const scalar_t centre_y = static_cast<scalar_t>(half_h - geo.pad_h + ho * geo.stride_h);
  *x = centre_x + (static_cast<scalar_t>(i * geo.dilation_w - half_w) + off_x) * offset_scale;
  *y = centre_y + (static_cast<scalar_t>(j * geo.dilation_h - half_h) + off_y) * offset_scale;
}

// Fills `b` for location (y, x) on an H x W map. Returns false when the location is so far outside
// that all four neighbours are zero padding (the caller then skips the sample entirely).
template <typename scalar_t>
DCNV3_HOST_DEVICE inline bool bilinear_setup(scalar_t y, scalar_t x, int64_t height, int64_t width,
                                             Bilinear<scalar_t>* b) {
  if (!(y > scalar_t(-1) && x > scalar_t(-1) && y < scalar_t(height) && x < scalar_t(width))) {
    return false;  // also rejects NaN locations
  }
  // floor via truncation of a shifted value: y > -1 so y + 1 > 0
  const int64_t h_low = static_cast<int64_t>(y + scalar_t(1)) - 1;
  const int64_t w_low = static_cast<int64_t>(x + scalar_t(1)) - 1;
  const int64_t h_high = h_low + 1;
  const int64_t w_high = w_low + 1;
  b->frac_h = y - scalar_t(h_low);
  b->frac_w = x - scalar_t(w_low);
  const scalar_t rest_h = scalar_t(1) - b->frac_h;
  const scalar_t rest_w = scalar_t(1) - b->frac_w;
  const bool low_h_in = h_low >= 0, high_h_in = h_high < height;
  const bool low_w_in = w_low >= 0, high_w_in = w_high < width;
  b->index[0] = (low_h_in && low_w_in) ? h_low * width + w_low : -1;
  b->index[1] = (low_h_in && high_w_in) ? h_low * width + w_high : -1;
  b->index[2] = (high_h_in && low_w_in) ? h_high * width + w_low : -1;
  b->index[3] = (high_h_in && high_w_in) ? h_high * width + w_high : -1;
  b->weight[0] = rest_h * rest_w;
  b->weight[1] = rest_h * b->frac_w;
  b->weight[2] = b->frac_h * rest_w;
  b->weight[3] = b->frac_h * b->frac_w;
  return true;
}

// Given the dot products corner_dot[k] = <grad_out, value of neighbour k> (zero for neighbours
// outside the map), the derivative of <grad_out, sample> with respect to the location (y, x).
template <typename scalar_t>
DCNV3_HOST_DEVICE inline void location_gradient(const Bilinear<scalar_t>& b, const scalar_t corner_dot[4],
                                                scalar_t* d_y, scalar_t* d_x) {
  const scalar_t rest_h = scalar_t(1) - b.frac_h;
  const scalar_t rest_w = scalar_t(1) - b.frac_w;
  *d_x = rest_h * (corner_dot[1] - corner_dot[0]) + b.frac_h * (corner_dot[3] - corner_dot[2]);
  *d_y = rest_w * (corner_dot[2] - corner_dot[0]) + b.frac_w * (corner_dot[3] - corner_dot[1]);
}

// Output size of one spatial dimension (same rule as a convolution).
DCNV3_HOST_DEVICE inline int64_t output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                                             int64_t dilation) {
  return (in + 2 * pad - (dilation * (kernel - 1) + 1)) / stride + 1;
}

}  // namespace dcnv3
