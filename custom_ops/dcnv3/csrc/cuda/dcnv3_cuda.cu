// DCNv3 on CUDA. The per-sample math (sampling location, bilinear neighbours and weights, location
// gradient) is the same __host__ __device__ code the CPU kernel uses (dcnv3_math.h).
//
// forward:        one thread per output element (position, group, channel), coalesced over channels.
// offset/mask:    one thread per sample (position, group, point); a gather, no atomics.
// input gradient: one thread per (position, group, channel); a scatter with atomicAdd.
//
// Precision: inputs may be float16, bfloat16, float32 or float64 (scalar_t). Loads are converted to
// acc_t = at::opmath_type<scalar_t> (float32 for the 16-bit types), every sum runs in acc_t, and
// each output element is rounded to scalar_t once. The input gradient is accumulated with native
// float / double atomicAdd in an acc_t buffer (16-bit atomics would round every partial sum) and
// converted at the end.
// Only c10/cuda headers: ATen/cuda/CUDAContext.h would also need the cuBLAS/cuSPARSE headers.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <vector>

#include "dcnv3.h"

namespace {

using dcnv3::Bilinear;
using dcnv3::Geometry;

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

// Decodes the output position and computes kernel point (i, j)'s neighbours for group g, in acc_t.
template <typename scalar_t, typename acc_t>
__device__ inline bool sample_at(const Geometry& geo, int64_t pos, int64_t g, int64_t i, int64_t j,
                                 const scalar_t* offset, acc_t offset_scale, Bilinear<acc_t>* b) {
  const int64_t ho = (pos / geo.width_out) % geo.height_out;
  const int64_t wo = pos % geo.width_out;
  const int64_t p = g * geo.points() + i * geo.kernel_h + j;
  const scalar_t* off = offset + pos * geo.group * geo.points() * 2 + 2 * p;
  acc_t y, x;
  dcnv3::sampling_location(geo, ho, wo, i, j, static_cast<acc_t>(off[0]), static_cast<acc_t>(off[1]), offset_scale,
                           &y, &x);
  return dcnv3::bilinear_setup(y, x, geo.height_in, geo.width_in, b);
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                               scalar_t* output, const Geometry geo, at::opmath_type<scalar_t> offset_scale,
                               int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = idx % Cg;
    const int64_t g = (idx / Cg) % geo.group;
    const int64_t pos = idx / C;
    const int64_t n = pos / (geo.height_out * geo.width_out);
    const scalar_t* image = input + n * geo.height_in * geo.width_in * C + g * Cg + c;
    const scalar_t* msk = mask + pos * geo.group * P + g * P;
    acc_t acc = 0;
    for (int64_t i = 0; i < geo.kernel_w; ++i) {
      for (int64_t j = 0; j < geo.kernel_h; ++j) {
        Bilinear<acc_t> b;
        if (!sample_at(geo, pos, g, i, j, offset, offset_scale, &b)) continue;
        acc_t v = 0;
        for (int k = 0; k < 4; ++k) {
          if (b.index[k] >= 0) v += b.weight[k] * static_cast<acc_t>(image[b.index[k] * C]);
        }
        acc += static_cast<acc_t>(msk[i * geo.kernel_h + j]) * v;
      }
    }
    output[idx] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t>
__global__ void offset_mask_backward_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                                            const scalar_t* grad_output, scalar_t* grad_offset,
                                            scalar_t* grad_mask, const Geometry geo,
                                            at::opmath_type<scalar_t> offset_scale, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t point = idx % P;  // = i * Kh + j
    const int64_t g = (idx / P) % geo.group;
    const int64_t pos = idx / (geo.group * P);
    const int64_t n = pos / (geo.height_out * geo.width_out);
    Bilinear<acc_t> b;
    if (!sample_at(geo, pos, g, point / geo.kernel_h, point % geo.kernel_h, offset, offset_scale, &b)) {
      continue;  // outputs were zero-initialised
    }
    const scalar_t* image = input + n * geo.height_in * geo.width_in * C + g * Cg;
    const scalar_t* go = grad_output + pos * C + g * Cg;
    acc_t dot[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4; ++k) {
      if (b.index[k] < 0) continue;
      const scalar_t* v = image + b.index[k] * C;
      for (int64_t c = 0; c < Cg; ++c) dot[k] += static_cast<acc_t>(go[c]) * static_cast<acc_t>(v[c]);
    }
    grad_mask[idx] = static_cast<scalar_t>(b.weight[0] * dot[0] + b.weight[1] * dot[1] + b.weight[2] * dot[2] +
                                           b.weight[3] * dot[3]);
    acc_t d_y, d_x;
    dcnv3::location_gradient(b, dot, &d_y, &d_x);
    const acc_t chain = static_cast<acc_t>(mask[idx]) * offset_scale;
    grad_offset[2 * idx] = static_cast<scalar_t>(chain * d_x);
    grad_offset[2 * idx + 1] = static_cast<scalar_t>(chain * d_y);
  }
}

// grad_input is an acc_t buffer (see the file comment).
template <typename scalar_t>
__global__ void input_backward_kernel(const scalar_t* offset, const scalar_t* mask, const scalar_t* grad_output,
                                      at::opmath_type<scalar_t>* grad_input, const Geometry geo,
                                      at::opmath_type<scalar_t> offset_scale, int64_t total) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(blockDim.x) * gridDim.x) {
    const int64_t c = idx % Cg;
    const int64_t g = (idx / Cg) % geo.group;
    const int64_t pos = idx / C;
    const int64_t n = pos / (geo.height_out * geo.width_out);
    acc_t* image_grad = grad_input + n * geo.height_in * geo.width_in * C + g * Cg + c;
    const scalar_t* msk = mask + pos * geo.group * P + g * P;
    const acc_t go = static_cast<acc_t>(grad_output[idx]);
    for (int64_t i = 0; i < geo.kernel_w; ++i) {
      for (int64_t j = 0; j < geo.kernel_h; ++j) {
        Bilinear<acc_t> b;
        if (!sample_at(geo, pos, g, i, j, offset, offset_scale, &b)) continue;
        const acc_t scaled = static_cast<acc_t>(msk[i * geo.kernel_h + j]) * go;
        for (int k = 0; k < 4; ++k) {
          if (b.index[k] >= 0) atomicAdd(image_grad + b.index[k] * C, b.weight[k] * scaled);
        }
      }
    }
  }
}

}  // namespace

at::Tensor dcnv3_forward_cuda(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                              const Geometry& geo, double offset_scale) {
  const c10::cuda::CUDAGuard guard(input.device());
  auto output = at::empty({geo.batch, geo.height_out, geo.width_out, geo.channels()}, input.options());
  const int64_t total = output.numel();
  if (total == 0) return output;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>(), geo, static_cast<acc_t>(offset_scale), total);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return output;
}

std::vector<at::Tensor> dcnv3_backward_cuda(const at::Tensor& input, const at::Tensor& offset,
                                            const at::Tensor& mask, const at::Tensor& grad_output,
                                            const Geometry& geo, double offset_scale) {
  const c10::cuda::CUDAGuard guard(input.device());
  auto grad_input = at::zeros(input.sizes(), input.options().dtype(at::toOpMathType(input.scalar_type())));
  auto grad_offset = at::zeros_like(offset);
  auto grad_mask = at::zeros_like(mask);
  const int64_t samples = mask.numel();
  const int64_t elements = grad_output.numel();
  if (elements > 0) {
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const acc_t scale = static_cast<acc_t>(offset_scale);
      offset_mask_backward_kernel<scalar_t><<<blocks_for(samples), kThreads, 0, stream>>>(
          input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
          grad_output.data_ptr<scalar_t>(), grad_offset.data_ptr<scalar_t>(), grad_mask.data_ptr<scalar_t>(), geo,
          scale, samples);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      input_backward_kernel<scalar_t><<<blocks_for(elements), kThreads, 0, stream>>>(
          offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
          grad_input.data_ptr<acc_t>(), geo, scale, elements);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Rounded once to the input's dtype (a no-op for float32 / float64).
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}
