// CUDA kernel of multi-scale deformable attention (forward and backward). Compiled only with
// FORCE_CUDA=1. The per-sample bilinear math is the SAME code the CPU kernel runs
// (ms_deform_attn_math.h), so the CPU tests cover it.
//
// One thread per output element (batch, query, head, channel): the channel is the fastest index,
// so neighbouring threads read neighbouring channels of the same corner (coalesced loads). In the
// backward pass the value gradient is a scatter and several threads hit the same sampling-location
// and attention-weight gradients (one per channel), so those are accumulated with atomicAdd.
//
// Precision: inputs may be float16, bfloat16, float32 or float64 (scalar_t). Loads are converted
// to acc_t = at::opmath_type<scalar_t> (float32 for the 16-bit types), every sum runs in acc_t,
// and the forward rounds each output element once. The backward accumulates all three gradients
// with atomicAdd into acc_t buffers (native float / double atomics, never 16-bit ones, which would
// round every partial sum) and converts them to scalar_t at the end.
// Only c10/cuda headers (not ATen/cuda/CUDAContext.h, which pulls in cuBLAS / cuSPARSE headers
// that a minimal CUDA toolkit does not ship).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "ms_deform_attn.h"
#include "ms_deform_attn_math.h"

namespace {

constexpr int kThreads = 256;

struct Sizes {
  int64_t batch, spatial, heads, channels, queries, levels, points;
};

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return Sizes{value.size(0),
               value.size(1),
               value.size(2),
               value.size(3),
               sampling_locations.size(1),
               sampling_locations.size(3),
               sampling_locations.size(4)};
}

int blocks_for(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 32));
}

template <typename scalar_t>
__global__ void forward_kernel(Sizes n, int64_t total, const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                               const scalar_t* __restrict__ locations, const scalar_t* __restrict__ weights,
                               scalar_t* __restrict__ output) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = n.heads * n.channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t d = i % n.channels;
    const int64_t bqh = i / n.channels;  // (b * Q + q) * H + h
    const int64_t h = bqh % n.heads;
    const int64_t b = bqh / n.heads / n.queries;
    const int64_t sample0 = bqh * n.levels * n.points;
    acc_t acc = 0;
    for (int64_t l = 0; l < n.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const scalar_t* level_value = value + ((b * n.spatial + starts[l]) * n.heads + h) * n.channels + d;
      for (int64_t p = 0; p < n.points; ++p) {
        const int64_t s = sample0 + l * n.points + p;
        msda::BilinearCorners<acc_t> corners;
        if (!msda::bilinear_corners(static_cast<acc_t>(locations[2 * s]), static_cast<acc_t>(locations[2 * s + 1]),
                                    height, width, corners)) {
          continue;
        }
        acc_t sampled = 0;
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          if (corners.valid[c]) {
            sampled += corners.weight[c] * static_cast<acc_t>(level_value[corners.index[c] * row_stride]);
          }
        }
        acc += static_cast<acc_t>(weights[s]) * sampled;
      }
    }
    output[i] = static_cast<scalar_t>(acc);
  }
}

// grad_value / grad_locations / grad_weights are acc_t buffers (see the file comment).
template <typename scalar_t>
__global__ void backward_kernel(Sizes n, int64_t total, const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ shapes, const int64_t* __restrict__ starts,
                                const scalar_t* __restrict__ locations, const scalar_t* __restrict__ weights,
                                const scalar_t* __restrict__ grad_output, at::opmath_type<scalar_t>* grad_value,
                                at::opmath_type<scalar_t>* grad_locations, at::opmath_type<scalar_t>* grad_weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row_stride = n.heads * n.channels;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t d = i % n.channels;
    const int64_t bqh = i / n.channels;
    const int64_t h = bqh % n.heads;
    const int64_t b = bqh / n.heads / n.queries;
    const int64_t sample0 = bqh * n.levels * n.points;
    const acc_t g = static_cast<acc_t>(grad_output[i]);
    for (int64_t l = 0; l < n.levels; ++l) {
      const int64_t height = shapes[2 * l], width = shapes[2 * l + 1];
      const int64_t level_offset = ((b * n.spatial + starts[l]) * n.heads + h) * n.channels + d;
      for (int64_t p = 0; p < n.points; ++p) {
        const int64_t s = sample0 + l * n.points + p;
        msda::BilinearCorners<acc_t> corners;
        if (!msda::bilinear_corners(static_cast<acc_t>(locations[2 * s]), static_cast<acc_t>(locations[2 * s + 1]),
                                    height, width, corners)) {
          continue;
        }
        const acc_t attn = static_cast<acc_t>(weights[s]);
        // Per-channel partial dots; sample_gradients is linear in them, so summing the partial
        // gradients of all channel threads gives the full gradient.
        acc_t dot[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          dot[c] = 0;
          if (!corners.valid[c]) continue;
          const int64_t offset = level_offset + corners.index[c] * row_stride;
          dot[c] = static_cast<acc_t>(value[offset]) * g;
          atomicAdd(grad_value + offset, attn * corners.weight[c] * g);
        }
        acc_t grad_attn, grad_x, grad_y;
        msda::sample_gradients(corners, dot, attn, height, width, grad_attn, grad_x, grad_y);
        atomicAdd(grad_weights + s, grad_attn);
        atomicAdd(grad_locations + 2 * s, grad_x);
        atomicAdd(grad_locations + 2 * s + 1, grad_y);
      }
    }
  }
}

}  // namespace

at::Tensor ms_deform_attn_cuda_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                       const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                       const at::Tensor& attention_weights) {
  const c10::cuda::OptionalCUDAGuard guard(value.device());
  const Sizes n = sizes_of(value, sampling_locations);
  auto output = at::empty({n.batch, n.queries, n.heads * n.channels}, value.options());
  const int64_t total = output.numel();
  if (total == 0) return output;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_forward", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        n, total, value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
        level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
        attention_weights.data_ptr<scalar_t>(), output.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cuda_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                     const at::Tensor& level_start_index,
                                                     const at::Tensor& sampling_locations,
                                                     const at::Tensor& attention_weights,
                                                     const at::Tensor& grad_output) {
  const c10::cuda::OptionalCUDAGuard guard(value.device());
  const Sizes n = sizes_of(value, sampling_locations);
  // All three are accumulated with atomicAdd in the accumulation type, so all start at zero.
  const auto acc_options = value.options().dtype(at::toOpMathType(value.scalar_type()));
  auto grad_value = at::zeros(value.sizes(), acc_options);
  auto grad_locations = at::zeros(sampling_locations.sizes(), acc_options);
  auto grad_weights = at::zeros(attention_weights.sizes(), acc_options);
  const int64_t total = grad_output.numel();
  if (total > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
          n, total, value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
          level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
          attention_weights.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(), grad_value.data_ptr<acc_t>(),
          grad_locations.data_ptr<acc_t>(), grad_weights.data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Rounded once to the inputs' dtype (a no-op for float32 / float64).
  const auto type = value.scalar_type();
  return {grad_value.to(type), grad_locations.to(type), grad_weights.to(type)};
}
