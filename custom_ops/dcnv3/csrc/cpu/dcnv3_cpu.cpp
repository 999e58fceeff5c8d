// DCNv3 on the CPU: forward and backward, parallel with at::parallel_for.
//
// Determinism: every output element is written by exactly one task, and each task adds its terms
// in a fixed order, so results do not depend on the number of threads. The input gradient is a
// scatter (many samples hit one pixel); instead of atomics or per-thread buffers it is partitioned
// by (image, group) -- and, when there are few of those, also by channel block -- so that each
// task owns the input-gradient channels it writes.
//
// Precision: input, offset, mask and gradients may be float16, bfloat16, float32 or float64
// (scalar_t). Loads are converted to acc_t = at::opmath_type<scalar_t> (float32 for the 16-bit
// types), all arithmetic and every sum runs in acc_t, and each output element is rounded to
// scalar_t once: the forward sums a (position, group) row in an acc_t buffer, and the input
// gradient is scattered into an acc_t tensor that is converted at the end.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "dcnv3.h"

namespace {

using dcnv3::Bilinear;
using dcnv3::Geometry;

// Points the four neighbours at their channel rows; neighbours outside the map point at a row of
// zeros (their weight is then irrelevant), which keeps the channel loops branch-free.
template <typename scalar_t, typename acc_t>
inline void corner_rows(const Bilinear<acc_t>& b, const scalar_t* image, int64_t channels, const scalar_t* zeros,
                        const scalar_t* rows[4]) {
  for (int k = 0; k < 4; ++k) rows[k] = b.index[k] >= 0 ? image + b.index[k] * channels : zeros;
}

// Sampling location and bilinear neighbours of kernel point (i, j), offsets read as acc_t.
template <typename scalar_t, typename acc_t>
inline bool sample_at(const Geometry& geo, int64_t ho, int64_t wo, int64_t i, int64_t j, const scalar_t* off_xy,
                      acc_t offset_scale, Bilinear<acc_t>* b) {
  acc_t y, x;
  dcnv3::sampling_location(geo, ho, wo, i, j, static_cast<acc_t>(off_xy[0]), static_cast<acc_t>(off_xy[1]),
                           offset_scale, &y, &x);
  return dcnv3::bilinear_setup(y, x, geo.height_in, geo.width_in, b);
}

template <typename scalar_t>
void forward_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask, scalar_t* output,
                    const Geometry geo, at::opmath_type<scalar_t> offset_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  const int64_t positions = geo.batch * geo.height_out * geo.width_out;
  const int64_t in_image = geo.height_in * geo.width_in * C;
  // a position costs G*P samples of Cg channels; aim for a few thousand multiply-adds per grain
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, geo.group * P * Cg));
  at::parallel_for(0, positions, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> zeros(Cg, scalar_t(0));
    std::vector<acc_t> acc(Cg);  // one (position, group) row, rounded to scalar_t once
    for (int64_t pos = begin; pos < end; ++pos) {
      const int64_t n = pos / (geo.height_out * geo.width_out);
      const int64_t ho = (pos / geo.width_out) % geo.height_out;
      const int64_t wo = pos % geo.width_out;
      const scalar_t* image = input + n * in_image;
      const scalar_t* off = offset + pos * geo.group * P * 2;
      const scalar_t* msk = mask + pos * geo.group * P;
      for (int64_t g = 0; g < geo.group; ++g) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        acc_t* a = acc.data();
        const scalar_t* image_g = image + g * Cg;
        for (int64_t i = 0; i < geo.kernel_w; ++i) {
          for (int64_t j = 0; j < geo.kernel_h; ++j) {
            const int64_t p = g * P + i * geo.kernel_h + j;
            Bilinear<acc_t> b;
            if (!sample_at(geo, ho, wo, i, j, off + 2 * p, offset_scale, &b)) continue;
            const acc_t m = static_cast<acc_t>(msk[p]);
            const acc_t w0 = m * b.weight[0], w1 = m * b.weight[1];
            const acc_t w2 = m * b.weight[2], w3 = m * b.weight[3];
            const scalar_t* rows[4];
            corner_rows(b, image_g, C, zeros.data(), rows);
            const scalar_t *v0 = rows[0], *v1 = rows[1], *v2 = rows[2], *v3 = rows[3];
            for (int64_t c = 0; c < Cg; ++c) {
              a[c] += w0 * static_cast<acc_t>(v0[c]) + w1 * static_cast<acc_t>(v1[c]) +
                      w2 * static_cast<acc_t>(v2[c]) + w3 * static_cast<acc_t>(v3[c]);
            }
          }
        }
        scalar_t* out = output + pos * C + g * Cg;
        for (int64_t c = 0; c < Cg; ++c) out[c] = static_cast<scalar_t>(a[c]);
      }
    }
  });
}

// Dot products <grad_out, neighbour k> over the channels. Eight independent lanes summed in a
// fixed order: the compiler can vectorise it (a plain running sum is a serial chain under strict
// IEEE rules) and the result still does not depend on how the work is split over threads.
template <typename scalar_t, typename acc_t>
inline void corner_dots(const acc_t* go, const scalar_t* const rows[4], int64_t channels, acc_t dot[4]) {
  constexpr int kLanes = 8;
  for (int k = 0; k < 4; ++k) {
    const scalar_t* v = rows[k];
    acc_t lane[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      for (int l = 0; l < kLanes; ++l) lane[l] += go[c + l] * static_cast<acc_t>(v[c + l]);
    }
    for (int l = 0; c < channels; ++c, ++l) lane[l] += go[c] * static_cast<acc_t>(v[c]);
    dot[k] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
  }
}

// Mask and offset gradients of one sample from its neighbour dot products, rounded to scalar_t.
template <typename scalar_t, typename acc_t>
inline void offset_mask_gradient(const Bilinear<acc_t>& b, const acc_t dot[4], acc_t mask_value, acc_t offset_scale,
                                 scalar_t* g_mask, scalar_t* g_offset_xy) {
  *g_mask = static_cast<scalar_t>(b.weight[0] * dot[0] + b.weight[1] * dot[1] + b.weight[2] * dot[2] +
                                  b.weight[3] * dot[3]);
  acc_t d_y, d_x;
  dcnv3::location_gradient(b, dot, &d_y, &d_x);
  const acc_t chain = mask_value * offset_scale;  // d location / d offset = offset_scale
  g_offset_xy[0] = static_cast<scalar_t>(chain * d_x);
  g_offset_xy[1] = static_cast<scalar_t>(chain * d_y);
}

// Adds mask * weight_k * grad_out to the `width` channels of each neighbour inside the map.
template <typename acc_t>
inline void scatter_sample(const Bilinear<acc_t>& b, acc_t mask_value, const acc_t* go, acc_t* image_grad,
                           int64_t channels, int64_t width) {
  for (int k = 0; k < 4; ++k) {
    if (b.index[k] < 0) continue;
    const acc_t w = mask_value * b.weight[k];
    acc_t* dst = image_grad + b.index[k] * channels;
    for (int64_t c = 0; c < width; ++c) dst[c] += w * go[c];
  }
}

// dst[c] = src[c] converted to acc_t, for `count` channels.
template <typename scalar_t, typename acc_t>
inline void load_row(const scalar_t* src, int64_t count, acc_t* dst) {
  for (int64_t c = 0; c < count; ++c) dst[c] = static_cast<acc_t>(src[c]);
}

// Gradients of offsets and masks: a pure gather, one task per output position.
template <typename scalar_t>
void offset_mask_backward_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                                 const scalar_t* grad_output, scalar_t* grad_offset, scalar_t* grad_mask,
                                 const Geometry geo, at::opmath_type<scalar_t> offset_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  const int64_t positions = geo.batch * geo.height_out * geo.width_out;
  const int64_t in_image = geo.height_in * geo.width_in * C;
  const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(1, geo.group * P * Cg));
  at::parallel_for(0, positions, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> zeros(Cg, scalar_t(0));
    std::vector<acc_t> go(Cg);
    for (int64_t pos = begin; pos < end; ++pos) {
      const int64_t n = pos / (geo.height_out * geo.width_out);
      const int64_t ho = (pos / geo.width_out) % geo.height_out;
      const int64_t wo = pos % geo.width_out;
      const scalar_t* off = offset + pos * geo.group * P * 2;
      const scalar_t* msk = mask + pos * geo.group * P;
      for (int64_t g = 0; g < geo.group; ++g) {
        load_row(grad_output + pos * C + g * Cg, Cg, go.data());
        const scalar_t* image_g = input + n * in_image + g * Cg;
        for (int64_t i = 0; i < geo.kernel_w; ++i) {
          for (int64_t j = 0; j < geo.kernel_h; ++j) {
            const int64_t p = g * P + i * geo.kernel_h + j;
            Bilinear<acc_t> b;
            if (!sample_at(geo, ho, wo, i, j, off + 2 * p, offset_scale, &b)) continue;  // grads stay 0
            const scalar_t* rows[4];
            corner_rows(b, image_g, C, zeros.data(), rows);
            acc_t dot[4];
            corner_dots(go.data(), rows, Cg, dot);
            offset_mask_gradient(b, dot, static_cast<acc_t>(msk[p]), offset_scale, grad_mask + pos * geo.group * P + p,
                                 grad_offset + (pos * geo.group * P + p) * 2);
          }
        }
      }
    }
  });
}

// Gradient of the input: a scatter. Task t owns channels [c0, c1) of group g in image n, and walks
// all samples of that group in a fixed order, so no two tasks write the same element.
template <typename scalar_t>
void input_backward_kernel(const scalar_t* offset, const scalar_t* mask, const scalar_t* grad_output,
                           at::opmath_type<scalar_t>* grad_input, const Geometry geo,
                           at::opmath_type<scalar_t> offset_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  const int64_t outputs = geo.height_out * geo.width_out;
  const int64_t in_image = geo.height_in * geo.width_in * C;
  // Enough tasks to keep every thread busy; the split never changes the arithmetic of an element.
  const int64_t groups_total = geo.batch * geo.group;
  const int64_t wanted = 2 * static_cast<int64_t>(at::get_num_threads());
  const int64_t max_blocks = std::max<int64_t>(1, Cg / 8);
  const int64_t blocks = std::min(max_blocks, std::max<int64_t>(1, (wanted + groups_total - 1) / groups_total));
  const int64_t block = (Cg + blocks - 1) / blocks;
  at::parallel_for(0, groups_total * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> go(block);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / (geo.group * blocks);
      const int64_t g = (task / blocks) % geo.group;
      const int64_t c0 = (task % blocks) * block;
      const int64_t width = std::min(Cg, c0 + block) - c0;
      if (width <= 0) continue;
      acc_t* image_grad = grad_input + n * in_image + g * Cg + c0;
      for (int64_t q = 0; q < outputs; ++q) {
        const int64_t pos = n * outputs + q;
        const int64_t ho = q / geo.width_out, wo = q % geo.width_out;
        const scalar_t* off = offset + pos * geo.group * P * 2;
        const scalar_t* msk = mask + pos * geo.group * P;
        load_row(grad_output + pos * C + g * Cg + c0, width, go.data());
        for (int64_t i = 0; i < geo.kernel_w; ++i) {
          for (int64_t j = 0; j < geo.kernel_h; ++j) {
            const int64_t p = g * P + i * geo.kernel_h + j;
            Bilinear<acc_t> b;
            if (!sample_at(geo, ho, wo, i, j, off + 2 * p, offset_scale, &b)) continue;
            scatter_sample(b, static_cast<acc_t>(msk[p]), go.data(), image_grad, C, width);
          }
        }
      }
    }
  });
}

// All three gradients in one pass, one task per (image, group): the task owns that group's
// channels of the input gradient and that group's offset/mask gradients. Used when there are
// enough (image, group) pairs to keep the threads busy; per element it does exactly the same
// arithmetic, in the same order, as the two kernels above.
template <typename scalar_t>
void fused_backward_kernel(const scalar_t* input, const scalar_t* offset, const scalar_t* mask,
                           const scalar_t* grad_output, at::opmath_type<scalar_t>* grad_input, scalar_t* grad_offset,
                           scalar_t* grad_mask, const Geometry geo, at::opmath_type<scalar_t> offset_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = geo.channels(), Cg = geo.group_channels, P = geo.points();
  const int64_t outputs = geo.height_out * geo.width_out;
  const int64_t in_image = geo.height_in * geo.width_in * C;
  at::parallel_for(0, geo.batch * geo.group, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> zeros(Cg, scalar_t(0));
    std::vector<acc_t> go(Cg);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / geo.group, g = task % geo.group;
      const scalar_t* image_g = input + n * in_image + g * Cg;
      acc_t* image_grad = grad_input + n * in_image + g * Cg;
      for (int64_t q = 0; q < outputs; ++q) {
        const int64_t pos = n * outputs + q;
        const int64_t ho = q / geo.width_out, wo = q % geo.width_out;
        const scalar_t* off = offset + pos * geo.group * P * 2;
        const scalar_t* msk = mask + pos * geo.group * P;
        load_row(grad_output + pos * C + g * Cg, Cg, go.data());
        for (int64_t i = 0; i < geo.kernel_w; ++i) {
          for (int64_t j = 0; j < geo.kernel_h; ++j) {
            const int64_t p = g * P + i * geo.kernel_h + j;
            Bilinear<acc_t> b;
            if (!sample_at(geo, ho, wo, i, j, off + 2 * p, offset_scale, &b)) continue;
            const scalar_t* rows[4];
            corner_rows(b, image_g, C, zeros.data(), rows);
            acc_t dot[4];
            corner_dots(go.data(), rows, Cg, dot);
            const acc_t m = static_cast<acc_t>(msk[p]);
            offset_mask_gradient(b, dot, m, offset_scale, grad_mask + pos * geo.group * P + p,
                                 grad_offset + (pos * geo.group * P + p) * 2);
            scatter_sample(b, m, go.data(), image_grad, C, Cg);
          }
        }
      }
    }
  });
}

// Fixed threshold (not the thread count) so the choice of path never depends on the threads.
constexpr int64_t kFusedMinTasks = 8;

}  // namespace

at::Tensor dcnv3_forward_cpu(const at::Tensor& input, const at::Tensor& offset, const at::Tensor& mask,
                             const Geometry& geo, double offset_scale) {
  // every element is written (rows with no sample inside the map get zeros)
  auto output = at::empty({geo.batch, geo.height_out, geo.width_out, geo.channels()}, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t>(input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
                             output.data_ptr<scalar_t>(), geo, static_cast<acc_t>(offset_scale));
  });
  return output;
}

std::vector<at::Tensor> dcnv3_backward_cpu(const at::Tensor& input, const at::Tensor& offset,
                                           const at::Tensor& mask, const at::Tensor& grad_output,
                                           const Geometry& geo, double offset_scale) {
  // The input gradient is a scatter: accumulated in the accumulation type (float32 for 16-bit
  // inputs) and rounded once at the end. Offset and mask gradients are written once per sample.
  auto grad_input = at::zeros(input.sizes(), input.options().dtype(at::toOpMathType(input.scalar_type())));
  auto grad_offset = at::zeros_like(offset);
  auto grad_mask = at::zeros_like(mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "dcnv3_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t scale = static_cast<acc_t>(offset_scale);
    if (geo.batch * geo.group >= kFusedMinTasks) {
      fused_backward_kernel<scalar_t>(input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
                                      mask.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
                                      grad_input.data_ptr<acc_t>(), grad_offset.data_ptr<scalar_t>(),
                                      grad_mask.data_ptr<scalar_t>(), geo, scale);
      return;
    }
    offset_mask_backward_kernel<scalar_t>(input.data_ptr<scalar_t>(), offset.data_ptr<scalar_t>(),
                                          mask.data_ptr<scalar_t>(), grad_output.data_ptr<scalar_t>(),
                                          grad_offset.data_ptr<scalar_t>(), grad_mask.data_ptr<scalar_t>(), geo,
                                          scale);
    input_backward_kernel<scalar_t>(offset.data_ptr<scalar_t>(), mask.data_ptr<scalar_t>(),
                                    grad_output.data_ptr<scalar_t>(), grad_input.data_ptr<acc_t>(), geo, scale);
  });
  // A no-op (same tensor) for float32 / float64.
  return {grad_input.to(input.scalar_type()), grad_offset, grad_mask};
}
