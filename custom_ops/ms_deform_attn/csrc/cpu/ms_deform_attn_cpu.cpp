// CPU kernel of multi-scale deformable attention (forward and backward).
//
// Layout: value is [B, S, H, D] so the D channels of one (position, head) are contiguous. Each
// sample computes its four corners and bilinear weights once (ms_deform_attn_math.h) and then
// runs a channel loop over D that the compiler vectorises (`omp simd`).
//
// Parallelisation, chosen so that every thread owns exactly what it writes (no atomics, no races)
// and every output element is accumulated in a fixed order, whatever the thread count:
//   forward  - work item = (batch, query): writes output[b, q, :, :] only.
//   backward - work item = (batch, head): the value gradient is a scatter into the sampled
//              positions, but a (b, h) item only ever touches grad_value[b, :, h, :], and the
//              location / weight gradients of its own samples. Queries are visited in order, so
//              the accumulation order in grad_value is fixed.
//
// Precision: value, locations, weights and gradients may be float16, bfloat16, float32 or float64
// (scalar_t). Every load is converted to acc_t = at::opmath_type<scalar_t> (float32 for the two
// 16-bit types, the type itself otherwise), all arithmetic and every sum runs in acc_t, and only
// the final value of each output element is rounded to scalar_t: the forward accumulates one
// (batch, query, head) row in an acc_t buffer, and the backward scatters the value gradient into
// an acc_t tensor that is converted once at the end.
//
// Instruction set: the extension is compiled for baseline x86-64 (SSE2), so on x86 the item loops
// are also compiled for AVX2+FMA and AVX-512 (GCC `target` + `flatten`, which inlines the whole
// loop body into the ISA-specific copy) and the best one the CPU supports is picked at run time.
// The choice is fixed per machine, so results still do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ms_deform_attn.h"
#include "ms_deform_attn_math.h"

namespace {

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

// out[d] += sum_c w[c] * v_c[d] for the corners that are inside the map (values read as acc_t).
template <typename scalar_t, typename acc_t>
inline void accumulate_sample(acc_t* __restrict__ out, const scalar_t* __restrict__ level_value,
                              int64_t row_stride, const msda::BilinearCorners<acc_t>& corners, acc_t attn,
                              int64_t channels) {
  if (corners.valid[0] && corners.valid[1] && corners.valid[2] && corners.valid[3]) {
    // Interior sample (the common case): one fused pass over the channels.
    const scalar_t* __restrict__ v0 = level_value + corners.index[0] * row_stride;
    const scalar_t* __restrict__ v1 = level_value + corners.index[1] * row_stride;
    const scalar_t* __restrict__ v2 = level_value + corners.index[2] * row_stride;
    const scalar_t* __restrict__ v3 = level_value + corners.index[3] * row_stride;
    const acc_t w0 = attn * corners.weight[0], w1 = attn * corners.weight[1];
    const acc_t w2 = attn * corners.weight[2], w3 = attn * corners.weight[3];
#pragma omp simd
    for (int64_t d = 0; d < channels; ++d) {
      out[d] += w0 * static_cast<acc_t>(v0[d]) + w1 * static_cast<acc_t>(v1[d]) +
                w2 * static_cast<acc_t>(v2[d]) + w3 * static_cast<acc_t>(v3[d]);
    }
    return;
  }
  for (int c = 0; c < 4; ++c) {
    if (!corners.valid[c]) continue;
    const scalar_t* __restrict__ v = level_value + corners.index[c] * row_stride;
    const acc_t w = attn * corners.weight[c];
#pragma omp simd
    for (int64_t d = 0; d < channels; ++d) {
      out[d] += w * static_cast<acc_t>(v[d]);
    }
  }
}

// For one sample: dot[c] = <v_c, g> and grad_v_c += attn * w_c * g, for the corners inside the map.
// g (the output gradient row) is already in acc_t; so is the value gradient being accumulated.
template <typename scalar_t, typename acc_t>
inline void backward_sample(const scalar_t* __restrict__ level_value, acc_t* __restrict__ level_grad_value,
                            int64_t row_stride, const msda::BilinearCorners<acc_t>& corners, acc_t attn,
                            const acc_t* __restrict__ grad_out, int64_t channels, acc_t dot[4]) {
  if (corners.valid[0] && corners.valid[1] && corners.valid[2] && corners.valid[3]) {
    const scalar_t* __restrict__ v0 = level_value + corners.index[0] * row_stride;
    const scalar_t* __restrict__ v1 = level_value + corners.index[1] * row_stride;
    const scalar_t* __restrict__ v2 = level_value + corners.index[2] * row_stride;
    const scalar_t* __restrict__ v3 = level_value + corners.index[3] * row_stride;
    acc_t* __restrict__ gv0 = level_grad_value + corners.index[0] * row_stride;
    acc_t* __restrict__ gv1 = level_grad_value + corners.index[1] * row_stride;
    acc_t* __restrict__ gv2 = level_grad_value + corners.index[2] * row_stride;
    acc_t* __restrict__ gv3 = level_grad_value + corners.index[3] * row_stride;
    const acc_t w0 = attn * corners.weight[0], w1 = attn * corners.weight[1];
    const acc_t w2 = attn * corners.weight[2], w3 = attn * corners.weight[3];
    acc_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : d0, d1, d2, d3)
    for (int64_t d = 0; d < channels; ++d) {
      const acc_t g = grad_out[d];
      d0 += static_cast<acc_t>(v0[d]) * g;
      d1 += static_cast<acc_t>(v1[d]) * g;
      d2 += static_cast<acc_t>(v2[d]) * g;
      d3 += static_cast<acc_t>(v3[d]) * g;
      gv0[d] += w0 * g;
      gv1[d] += w1 * g;
      gv2[d] += w2 * g;
      gv3[d] += w3 * g;
    }
    dot[0] = d0;
    dot[1] = d1;
    dot[2] = d2;
    dot[3] = d3;
    return;
  }
  for (int c = 0; c < 4; ++c) {
    dot[c] = 0;
    if (!corners.valid[c]) continue;
    const scalar_t* __restrict__ v = level_value + corners.index[c] * row_stride;
    acc_t* __restrict__ gv = level_grad_value + corners.index[c] * row_stride;
    const acc_t w = attn * corners.weight[c];
    acc_t acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t d = 0; d < channels; ++d) {
      const acc_t g = grad_out[d];
      acc += static_cast<acc_t>(v[d]) * g;
      gv[d] += w * g;
    }
    dot[c] = acc;
  }
}

template <typename scalar_t>
struct Pointers {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* value;
  const int64_t* shapes;
  const int64_t* starts;
  const scalar_t* locations;
  const scalar_t* weights;
  const scalar_t* grad_output;  // backward only
  scalar_t* output;             // forward only
  acc_t* grad_value;            // backward only: accumulated in acc_t, converted by the caller
  scalar_t* grad_locations;     // backward only
  scalar_t* grad_weights;       // backward only
};

// Forward for the (batch, query) items [begin, end). kChannels > 0 fixes D at compile time (the
// common D = 32 of a 256-wide, 8-head layer), so the channel loops are fully unrolled.
template <typename scalar_t, int kChannels>
void forward_items(const Sizes& n, const Pointers<scalar_t>& t, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = kChannels > 0 ? kChannels : n.channels;
  const int64_t row_stride = n.heads * channels;  // distance between two positions of one head
  const int64_t samples_per_head = n.levels * n.points;
  // One output row (D channels of a (b, q, h)) is summed here and rounded to scalar_t once.
  acc_t fixed_row[kChannels > 0 ? kChannels : 1];
  std::vector<acc_t> dynamic_row(kChannels > 0 ? 0 : channels);
  acc_t* acc = kChannels > 0 ? fixed_row : dynamic_row.data();
  for (int64_t bq = begin; bq < end; ++bq) {
    const int64_t b = bq / n.queries;
    for (int64_t h = 0; h < n.heads; ++h) {
      for (int64_t d = 0; d < channels; ++d) acc[d] = 0;
      const int64_t sample0 = (bq * n.heads + h) * samples_per_head;
      for (int64_t l = 0; l < n.levels; ++l) {
        const int64_t height = t.shapes[2 * l], width = t.shapes[2 * l + 1];
        const scalar_t* level_value = t.value + ((b * n.spatial + t.starts[l]) * n.heads + h) * channels;
        for (int64_t p = 0; p < n.points; ++p) {
          const int64_t s = sample0 + l * n.points + p;
          msda::BilinearCorners<acc_t> corners;
          if (!msda::bilinear_corners(static_cast<acc_t>(t.locations[2 * s]),
                                      static_cast<acc_t>(t.locations[2 * s + 1]), height, width, corners)) {
            continue;
          }
          accumulate_sample(acc, level_value, row_stride, corners, static_cast<acc_t>(t.weights[s]), channels);
        }
      }
      scalar_t* out = t.output + (bq * n.heads + h) * channels;
      for (int64_t d = 0; d < channels; ++d) out[d] = static_cast<scalar_t>(acc[d]);
    }
  }
}

// Backward for the (batch, head) items [begin, end).
template <typename scalar_t, int kChannels>
void backward_items(const Sizes& n, const Pointers<scalar_t>& t, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t channels = kChannels > 0 ? kChannels : n.channels;
  const int64_t row_stride = n.heads * channels;
  const int64_t samples_per_head = n.levels * n.points;
  // The output-gradient row of the current (b, q, h), converted to acc_t once for all its samples.
  acc_t fixed_row[kChannels > 0 ? kChannels : 1];
  std::vector<acc_t> dynamic_row(kChannels > 0 ? 0 : channels);
  acc_t* g = kChannels > 0 ? fixed_row : dynamic_row.data();
  for (int64_t bh = begin; bh < end; ++bh) {
    const int64_t b = bh / n.heads, h = bh % n.heads;
    for (int64_t q = 0; q < n.queries; ++q) {
      const int64_t bq = b * n.queries + q;
      const scalar_t* grad_row = t.grad_output + (bq * n.heads + h) * channels;
      for (int64_t d = 0; d < channels; ++d) g[d] = static_cast<acc_t>(grad_row[d]);
      const int64_t sample0 = (bq * n.heads + h) * samples_per_head;
      for (int64_t l = 0; l < n.levels; ++l) {
        const int64_t height = t.shapes[2 * l], width = t.shapes[2 * l + 1];
        const int64_t level_offset = ((b * n.spatial + t.starts[l]) * n.heads + h) * channels;
        for (int64_t p = 0; p < n.points; ++p) {
          const int64_t s = sample0 + l * n.points + p;
          msda::BilinearCorners<acc_t> corners;
          if (!msda::bilinear_corners(static_cast<acc_t>(t.locations[2 * s]),
                                      static_cast<acc_t>(t.locations[2 * s + 1]), height, width, corners)) {
            t.grad_weights[s] = 0;
            t.grad_locations[2 * s] = 0;
            t.grad_locations[2 * s + 1] = 0;
            continue;
          }
          const acc_t attn = static_cast<acc_t>(t.weights[s]);
          acc_t dot[4];
          backward_sample(t.value + level_offset, t.grad_value + level_offset, row_stride, corners, attn, g,
                          channels, dot);
          acc_t grad_attn, grad_x, grad_y;
          msda::sample_gradients(corners, dot, attn, height, width, grad_attn, grad_x, grad_y);
          t.grad_weights[s] = static_cast<scalar_t>(grad_attn);
          t.grad_locations[2 * s] = static_cast<scalar_t>(grad_x);
          t.grad_locations[2 * s + 1] = static_cast<scalar_t>(grad_y);
        }
      }
    }
  }
}

template <typename scalar_t>
using ItemsFn = void (*)(const Sizes&, const Pointers<scalar_t>&, int64_t, int64_t);

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define MSDA_X86_DISPATCH 1
template <typename scalar_t, int kChannels>
__attribute__((target("avx2,fma"), flatten)) void forward_items_avx2(const Sizes& n, const Pointers<scalar_t>& t,
                                                                      int64_t begin, int64_t end) {
  forward_items<scalar_t, kChannels>(n, t, begin, end);
}
template <typename scalar_t, int kChannels>
__attribute__((target("avx512f,avx512vl,avx2,fma"), flatten)) void forward_items_avx512(
    const Sizes& n, const Pointers<scalar_t>& t, int64_t begin, int64_t end) {
  forward_items<scalar_t, kChannels>(n, t, begin, end);
}
template <typename scalar_t, int kChannels>
__attribute__((target("avx2,fma"), flatten)) void backward_items_avx2(const Sizes& n, const Pointers<scalar_t>& t,
                                                                       int64_t begin, int64_t end) {
  backward_items<scalar_t, kChannels>(n, t, begin, end);
}
template <typename scalar_t, int kChannels>
__attribute__((target("avx512f,avx512vl,avx2,fma"), flatten)) void backward_items_avx512(
    const Sizes& n, const Pointers<scalar_t>& t, int64_t begin, int64_t end) {
  backward_items<scalar_t, kChannels>(n, t, begin, end);
}
#endif

enum class Isa { kBaseline, kAvx2, kAvx512 };

// The best instruction set of this CPU, lowered by the environment variable
// VISIONLLM_MSDA_CPU_ISA=baseline|avx2 (read at every call, so tests can cover every code path).
Isa best_isa() {
#ifdef MSDA_X86_DISPATCH
  static const Isa supported = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kBaseline;
  }();
  const char* requested = std::getenv("VISIONLLM_MSDA_CPU_ISA");
  if (requested != nullptr) {
    if (std::strcmp(requested, "baseline") == 0) return Isa::kBaseline;
    if (std::strcmp(requested, "avx2") == 0 && supported != Isa::kBaseline) return Isa::kAvx2;
  }
  return supported;
#else
  return Isa::kBaseline;
#endif
}

// The item loop for this CPU's instruction set and channel count.
template <typename scalar_t, int kChannels>
ItemsFn<scalar_t> select_items(bool backward) {
#ifdef MSDA_X86_DISPATCH
  switch (best_isa()) {
    case Isa::kAvx512:
      return backward ? &backward_items_avx512<scalar_t, kChannels> : &forward_items_avx512<scalar_t, kChannels>;
    case Isa::kAvx2:
      return backward ? &backward_items_avx2<scalar_t, kChannels> : &forward_items_avx2<scalar_t, kChannels>;
    default:
      break;
  }
#endif
  return backward ? &backward_items<scalar_t, kChannels> : &forward_items<scalar_t, kChannels>;
}

template <typename scalar_t>
ItemsFn<scalar_t> items_fn(int64_t channels, bool backward) {
  return channels == 32 ? select_items<scalar_t, 32>(backward) : select_items<scalar_t, 0>(backward);
}

}  // namespace

at::Tensor ms_deform_attn_cpu_forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                      const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
                                      const at::Tensor& attention_weights) {
  const Sizes n = sizes_of(value, sampling_locations);
  auto output = at::empty({n.batch, n.queries, n.heads * n.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_forward", [&] {
    const Pointers<scalar_t> t{value.data_ptr<scalar_t>(),
                               spatial_shapes.data_ptr<int64_t>(),
                               level_start_index.data_ptr<int64_t>(),
                               sampling_locations.data_ptr<scalar_t>(),
                               attention_weights.data_ptr<scalar_t>(),
                               nullptr,
                               output.data_ptr<scalar_t>(),
                               nullptr,
                               nullptr,
                               nullptr};
    const ItemsFn<scalar_t> items = items_fn<scalar_t>(n.channels, /*backward=*/false);
    // Enough (b, q) items per chunk that scheduling overhead stays negligible.
    const int64_t grain = std::max<int64_t>(1, 2048 / std::max<int64_t>(1, n.heads * n.levels * n.points));
    at::parallel_for(0, n.batch * n.queries, grain, [&](int64_t begin, int64_t end) { items(n, t, begin, end); });
  });
  return output;
}

std::vector<at::Tensor> ms_deform_attn_cpu_backward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                                    const at::Tensor& level_start_index,
                                                    const at::Tensor& sampling_locations,
                                                    const at::Tensor& attention_weights,
                                                    const at::Tensor& grad_output) {
  const Sizes n = sizes_of(value, sampling_locations);
  // grad_value is a scatter, accumulated in the accumulation type (float32 for 16-bit inputs) and
  // rounded to value's dtype at the end; the other two are written once per sample.
  const auto acc_type = at::toOpMathType(value.scalar_type());
  auto grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  auto grad_locations = at::empty_like(sampling_locations);
  auto grad_weights = at::empty_like(attention_weights);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const Pointers<scalar_t> t{value.data_ptr<scalar_t>(),
                               spatial_shapes.data_ptr<int64_t>(),
                               level_start_index.data_ptr<int64_t>(),
                               sampling_locations.data_ptr<scalar_t>(),
                               attention_weights.data_ptr<scalar_t>(),
                               grad_output.data_ptr<scalar_t>(),
                               nullptr,
                               grad_value_acc.data_ptr<acc_t>(),
                               grad_locations.data_ptr<scalar_t>(),
                               grad_weights.data_ptr<scalar_t>()};
    const ItemsFn<scalar_t> items = items_fn<scalar_t>(n.channels, /*backward=*/true);
    // One (batch, head) item owns grad_value[b, :, h, :]: no two threads write the same element.
    at::parallel_for(0, n.batch * n.heads, 1, [&](int64_t begin, int64_t end) { items(n, t, begin, end); });
  });
  // A no-op (same tensor) when value is float32 or float64.
  return {grad_value_acc.to(value.scalar_type()), grad_locations, grad_weights};
}
